package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidate runs `signet server validate` and `signet agent validate`
// (SPIRE's) on good and bad files: a good one is said valid, a bad one
// fails with the file and the reason, as run would.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		role, name, body, want string
	}{
		{"server", "ok.conf", "trust_domain = \"example.org\"\nsvid_ttl = \"1h\"\n", "is valid"},
		{"server", "typo.conf", "trust_domain = \"example.org\"\nsvid_tll = \"1h\"\n", "unknown key(s): svid_tll"},
		{"server", "notalist.conf", "trust_domain = \"example.org\"\nx509pop {\n  ca_bundle_paths = \"/x.pem\"\n}\n", "line 3: ca_bundle_paths wants a list"},
		{"agent", "notalist.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\nauthorized_delegates = \"spiffe://example.org/x\"\n", "line 3: authorized_delegates wants a list"},
		{"server", "ttl.conf", "trust_domain = \"example.org\"\nsvid_ttl = \"1h\"\nca_ttl = \"2h\"\n", "at least 6 x svid_ttl"},
		{"server", "x509pop.conf", "trust_domain = \"example.org\"\nx509pop {\n  ca_bundle_path = \"" + filepath.Join(dir, "missing.pem") + "\"\n}\n", "missing.pem"},
		{"server", "aws.conf", "trust_domain = \"example.org\"\naws_iid {\n  account_ids_for_local_validation = [\"111122223333\"]\n}\n", "is valid"},
		{"server", "awscerts.conf", "trust_domain = \"example.org\"\naws_iid {\n  account_ids_for_local_validation = [\"111122223333\"]\n  aws_certificates_path = \"" + filepath.Join(dir, "missing-aws.pem") + "\"\n}\n", "missing-aws.pem"},
		{"server", "gcp.conf", "trust_domain = \"example.org\"\ngcp_iit {\n  projectid_allow_list = [\"project-a\"]\n}\n", "is valid"},
		{"server", "gcpbad.conf", "trust_domain = \"example.org\"\ngcp_iit {\n  projectid_allow_list = [\"project-a\"]\n  agent_path_template = \"{{ .Tags }}\"\n}\n", "unknown field .Tags; the fields are "},
		{"server", "upstream.conf", "trust_domain = \"example.org\"\nupstream_authority \"disk\" {\n  cert_file_path = \"" + filepath.Join(dir, "up.crt") + "\"\n  key_file_path = \"" + filepath.Join(dir, "up.key") + "\"\n}\n", "up.crt"},
		{"server", "endpoint.conf", "trust_domain = \"example.org\"\nfederation {\n  bundle_endpoint {\n    address = \"127.0.0.1:8443\"\n    profile \"https_web\" {\n      serving_cert_file {\n        cert_file_path = \"" + filepath.Join(dir, "ep.crt") + "\"\n        key_file_path = \"" + filepath.Join(dir, "ep.key") + "\"\n      }\n    }\n  }\n}\n", "ep.crt"},
		{"agent", "ok.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\ninsecure_bootstrap = true\njoin_token = \"t\"\n", "is valid"},
		{"agent", "nobundle.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\ntrust_bundle_path = \"" + filepath.Join(dir, "missing.pem") + "\"\njoin_token = \"t\"\n", "missing.pem"},
		{"agent", "aws.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\ntrust_bundle_url = \"https://signet.example.org/bundle\"\naws_iid {}\n", "is valid"},
		{"agent", "awsinsecure.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\ninsecure_bootstrap = true\naws_iid {\n  ec2_metadata_endpoint = \"http://169.254.169.254/\"\n}\n", "insecure_bootstrap cannot be used with aws_iid"},
		{"agent", "gcp.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\ntrust_bundle_url = \"https://signet.example.org/bundle\"\ngcp_iit {\n  service_account = \"default\"\n}\n", "is valid"},
		{"agent", "gcphost.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\ntrust_bundle_url = \"https://signet.example.org/bundle\"\ngcp_iit {\n  identity_token_host = \"http://metadata\"\n}\n", "identity_token_host"},
		{"agent", "two.conf", "server_address = \"127.0.0.1:8081\"\ntrust_domain = \"example.org\"\ninsecure_bootstrap = true\njoin_token = \"t\"\nx509pop_cert_path = \"/c\"\nx509pop_key_path = \"/k\"\n", "attests one way"},
	} {
		path := write(tc.role+"-"+tc.name, tc.body)
		out, err := signet(t, tc.role, "validate", "--config", path)
		if tc.want == "is valid" {
			if err != nil || out != path+" is valid.\n" {
				t.Errorf("%s validate %s: %v\n%s", tc.role, tc.name, err, out)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s validate %s: %v\n%s; want an error naming the file and %q", tc.role, tc.name, err, out, tc.want)
		}
	}
	if out, err := signet(t, "server", "validate"); err == nil || !strings.Contains(err.Error(), "config") {
		t.Errorf("server validate without --config: %v\n%s", err, out)
	}
}
