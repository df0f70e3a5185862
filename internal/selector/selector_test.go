package selector

import (
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in       string
		wantType string
		wantVal  string
		wantErr  string
	}{
		{in: "unix:uid:1000", wantType: "unix", wantVal: "uid:1000"},
		{in: "unix:user:postgres", wantType: "unix", wantVal: "user:postgres"},
		{in: "unix:path:/usr/sbin/nginx", wantType: "unix", wantVal: "path:/usr/sbin/nginx"},
		{in: "k8s:pod-label:app:web", wantType: "k8s", wantVal: "pod-label:app:web"},
		{in: "k8s:pod-owner:ReplicaSet:web-7d4b9", wantType: "k8s", wantVal: "pod-owner:ReplicaSet:web-7d4b9"},
		{in: "k8s:pod-image:docker.io/library/envoy:1.30", wantType: "k8s", wantVal: "pod-image:docker.io/library/envoy:1.30"},
		{in: "k8s:pod-init-image-count:0", wantType: "k8s", wantVal: "pod-init-image-count:0"},
		{in: "k8s:container-image:docker.io/nginx:1.25", wantType: "k8s", wantVal: "container-image:docker.io/nginx:1.25"},
		{in: "join_token:abc", wantType: "join_token", wantVal: "abc"},
		{in: "k8s_psat:cluster:c1", wantType: "k8s_psat", wantVal: "cluster:c1"},
		{in: "join_token:0123abcd", wantType: "join_token", wantVal: "0123abcd"},
		{in: "custom:anything:goes", wantErr: "unknown type \"custom\" (known: aws_iid, gcp_iit, join_token, k8s, k8s_psat, sshpop, systemd, unix, x509pop)"},
		{in: "systemd:id:nginx.service", wantType: "systemd", wantVal: "id:nginx.service"},
		{in: "systemd:id:getty@tty1.service", wantType: "systemd", wantVal: "id:getty@tty1.service"},
		{in: "systemd:id:user@1000.service", wantType: "systemd", wantVal: "id:user@1000.service"},
		{in: "systemd:id:session-3.scope", wantType: "systemd", wantVal: "id:session-3.scope"},
		{in: "systemd:id:a@b@c.service", wantType: "systemd", wantVal: "id:a@b@c.service"},
		{in: `systemd:id:systemd-fsck@dev-disk-by\x2duuid-0a1b.service`, wantType: "systemd", wantVal: `id:systemd-fsck@dev-disk-by\x2duuid-0a1b.service`},
		{in: "systemd:id:dev-mapper-a:b.swap", wantType: "systemd", wantVal: "id:dev-mapper-a:b.swap"},
		{in: "systemd:id:" + strings.Repeat("a", 247) + ".service", wantType: "systemd", wantVal: "id:" + strings.Repeat("a", 247) + ".service"},
		{in: "systemd:id:" + strings.Repeat("a", 248) + ".service", wantErr: "256 bytes; the limit is 255"},
		{in: "systemd:id:nginx", wantErr: `"nginx" has no type suffix; want e.g. nginx.service`},
		{in: "systemd:id:.service", wantErr: "no type suffix"},
		{in: "systemd:id:nginx.daemon", wantErr: `unknown unit type "daemon" (known: automount, device, mount, path, scope, service, slice, socket, swap, target, timer)`},
		{in: "systemd:id:nginx.Service", wantErr: `unknown unit type "Service"`},
		{in: "systemd:id:my app.service", wantErr: `holds ' ': unit names hold ASCII letters`},
		{in: "systemd:id:café.service", wantErr: `holds 'é'`},
		{in: "systemd:id:a/b.service", wantErr: `holds '/'`},
		{in: "systemd:id:@foo.service", wantErr: "starts with '@'"},
		{in: "systemd:id:getty@.service", wantErr: "is a template, which no process runs in; name an instance, e.g. getty@foo.service"},
		{in: "systemd:id:system.slice", wantErr: `"system.slice" is a slice: slices hold units, not processes`},
		{in: "systemd:id:", wantErr: "systemd unit name is empty"},
		{in: "systemd:id", wantErr: "want systemd:id:<value>"},
		{in: "systemd:fragment_path:/etc/systemd/system/nginx.service", wantErr: `systemd:fragment_path is not provided (it needs systemd's D-Bus API); use systemd:id:<unit>`},
		{in: "systemd:FragmentPath:/etc/systemd/system/nginx.service", wantErr: `systemd:fragment_path is not provided`},
		{in: "systemd:Id:nginx.service", wantErr: `unknown systemd key "Id"; did you mean systemd:id:nginx.service?`},
		{in: "unix:UID:1000", wantErr: `did you mean unix:uid:1000?`},
		{in: "id:nginx.service", wantErr: "did you mean systemd:id:nginx.service?"},
		{in: "x509pop:subject:cn:web-1.example.org", wantType: "x509pop", wantVal: "subject:cn:web-1.example.org"},
		{in: "x509pop:ca:fingerprint:0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33", wantType: "x509pop", wantVal: "ca:fingerprint:0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"},
		{in: "x509pop:serialnumber:0a1b2c", wantType: "x509pop", wantVal: "serialnumber:0a1b2c"},
		{in: "x509pop:san:datacenter:us-east-1", wantType: "x509pop", wantVal: "san:datacenter:us-east-1"},
		{in: "x509pop:subject:o:Example", wantErr: "want cn:<value>"},
		{in: "x509pop:subject:cn:", wantErr: "want cn:<value>"},
		{in: "x509pop:ca:fingerprint:0BEEC7", wantErr: "fingerprint:<lower-case hex SHA-1"},
		{in: "x509pop:serialnumber:a1b", wantErr: "even number of digits"},
		{in: "x509pop:san:datacenter", wantErr: "want <key>:<value>"},
		{in: "sshpop:principal:web-1.example.org", wantType: "sshpop", wantVal: "principal:web-1.example.org"},
		{in: "sshpop:ca:fingerprint:SHA256:ITcmljbJuIgUVO+JBBUzLX5K3uQiWFZOHrtA9Yy5uX0", wantType: "sshpop", wantVal: "ca:fingerprint:SHA256:ITcmljbJuIgUVO+JBBUzLX5K3uQiWFZOHrtA9Yy5uX0"},
		{in: "sshpop:principal:", wantErr: "value is empty"},
		{in: "sshpop:ca:fingerprint:ITcmljbJuIgUVO+JBBUzLX5K3uQiWFZOHrtA9Yy5uX0", wantErr: "want fingerprint:SHA256:"},
		{in: "sshpop:ca:fingerprint:SHA256:ITcmljbJuIgUVO-JBBUzLX5K3uQiWFZOHrtA9Yy5uX0", wantErr: "want fingerprint:SHA256:"},
		{in: "sshpop:hostname:web-1", wantErr: "unknown"},
		{in: "aws_iid:account_id:111122223333", wantType: "aws_iid", wantVal: "account_id:111122223333"},
		{in: "aws_iid:region:us-east-1", wantType: "aws_iid", wantVal: "region:us-east-1"},
		{in: "aws_iid:az:us-east-1a", wantType: "aws_iid", wantVal: "az:us-east-1a"},
		{in: "aws_iid:image:id:ami-0abcdef1234567890", wantType: "aws_iid", wantVal: "image:id:ami-0abcdef1234567890"},
		{in: "aws_iid:instance:id:i-0123456789abcdef0", wantType: "aws_iid", wantVal: "instance:id:i-0123456789abcdef0"},
		{in: "aws_iid:instance:i-0123456789abcdef0", wantErr: "want id:<value>"},
		{in: "aws_iid:region:", wantErr: "value is empty"},
		{in: "aws_iid:tag:role:web", wantErr: "aws_iid:tag is not provided: SPIRE reads instance tags from the cloud provider's API, which Signet does not call; use aws_iid:account_id, aws_iid:az, aws_iid:image, aws_iid:instance, aws_iid:region"},
		{in: "aws_iid:sg:id:sg-1", wantErr: "aws_iid:sg is not provided"},
		{in: "aws_iid:iamrole:arn:aws:iam::1:role/r", wantErr: "aws_iid:iamrole is not provided"},
		{in: "gcp_iit:project-id:big-kahuna-123456", wantType: "gcp_iit", wantVal: "project-id:big-kahuna-123456"},
		{in: "gcp_iit:zone:us-west1-b", wantType: "gcp_iit", wantVal: "zone:us-west1-b"},
		{in: "gcp_iit:instance-name:blog-server", wantType: "gcp_iit", wantVal: "instance-name:blog-server"},
		{in: "gcp_iit:project_id:p", wantErr: "unknown gcp_iit key \"project_id\""},
		{in: "gcp_iit:label:env:prod", wantErr: "gcp_iit:label is not provided: SPIRE reads instance labels from the cloud provider's API, which Signet does not call; use gcp_iit:instance-name, gcp_iit:project-id, gcp_iit:zone"},
		{in: "gcp_iit:sa:x@y", wantErr: "gcp_iit:sa is not provided"},
		{in: "aws_iid:account:111122223333", wantErr: "unknown aws_iid key \"account\""},
		{in: "uid:1000", wantErr: "did you mean unix:uid:1000?"},
		{in: "ns:payments", wantErr: "did you mean k8s:ns:payments?"},
		{in: "", wantErr: "want type:value"},
		{in: "unix", wantErr: "want type:value"},
		{in: ":x", wantErr: "type is empty"},
		{in: "unix:", wantErr: "value is empty"},
		{in: "Unix:uid:1", wantErr: "lower-case"},
		{in: "unix:uid:abc", wantErr: "not a numeric id"},
		{in: "unix:uid:-1", wantErr: "not a numeric id"},
		{in: "unix:uid:01000", wantErr: "leading zeros"},
		{in: "unix:gid:+5", wantErr: "not a numeric id"},
		{in: "unix:uid:0", wantType: "unix", wantVal: "uid:0"},
		{in: "unix:usr:postgres", wantErr: `unknown unix key "usr"`},
		{in: "unix:uid", wantErr: "want unix:uid:<value>"},
		{in: "unix:path:bin/nginx", wantErr: "not absolute"},
		{in: "unix:sha256:XYZ", wantErr: "SHA-256"},
		{in: "k8s:pod-label:app", wantErr: "<label-key>:<value>"},
		{in: "k8s:pod-owner:ReplicaSet", wantErr: "<kind>:<name or uid>"},
		{in: "k8s:pod-owner:ReplicaSet:", wantErr: "<kind>:<name or uid>"},
		{in: "k8s:pod-owner-uid::abc", wantErr: "<kind>:<name or uid>"},
		{in: "k8s:pod-image-count:two", wantErr: "not a numeric"},
		{in: "k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-1a", wantType: "k8s_psat", wantVal: "agent_node_label:topology.kubernetes.io/zone:eu-1a"},
		{in: "k8s_psat:agent_node_label:zone", wantErr: "<label-key>:<value>"},
		{in: "k8s_psat:node_name:n1", wantErr: `unknown k8s_psat key "node_name"`},
		{in: "k8s:ns:a\nb", wantErr: "control character"},
		{in: "join_token:" + strings.Repeat("x", 1100), wantErr: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got.Type != tt.wantType || got.Value != tt.wantVal || got.String() != tt.in {
				t.Fatalf("Parse(%q) = %+v", tt.in, got)
			}
		})
	}
}

func TestSetIncludes(t *testing.T) {
	workload := NewSet(
		Selector{"unix", "uid:1000"}, Selector{"unix", "gid:1000"}, Selector{"unix", "path:/bin/app"},
	)
	tests := []struct {
		name  string
		entry []Selector
		want  bool
	}{
		{"subset", []Selector{{"unix", "uid:1000"}}, true},
		{"equal", []Selector{{"unix", "uid:1000"}, {"unix", "gid:1000"}, {"unix", "path:/bin/app"}}, true},
		{"one missing", []Selector{{"unix", "uid:1000"}, {"unix", "uid:0"}}, false},
		{"empty matches nothing", nil, false},
	}
	for _, tt := range tests {
		if got := workload.Includes(tt.entry); got != tt.want {
			t.Errorf("%s: Includes = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseAllSortsAndDedups(t *testing.T) {
	got, err := ParseAll([]string{"unix:uid:1", "k8s:ns:a", "unix:uid:1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "k8s:ns:a,unix:uid:1"; strings.Join(Strings(got), ",") != want {
		t.Fatalf("got %v, want %s", Strings(got), want)
	}
	if _, err := ParseAll(nil); err == nil {
		t.Fatal("ParseAll(nil) succeeded")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"unix:uid:1000", "k8s:pod-label:a:b", "x:y", ":", "unix:sha256:00",
		"systemd:id:nginx.service", "systemd:id:getty@tty1.service", "systemd:id:getty@.service", "systemd:id:system.slice", `systemd:id:a\x2d:b.mount`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		if sel.String() != s {
			t.Fatalf("accepted %q but it prints as %q", s, sel.String())
		}
		again, err := Parse(sel.String())
		if err != nil || again != sel {
			t.Fatalf("re-parse of %q: %v, %v", s, again, err)
		}
		if err := sel.Validate(); err != nil {
			t.Fatalf("accepted %q fails Validate: %v", s, err)
		}
		if unit, ok := strings.CutPrefix(s, "systemd:id:"); ok {
			// systemd's unit_name_is_valid: a name, a dot, a known type.
			typ := unit[strings.LastIndex(unit, ".")+1:]
			if len(unit) > 255 || strings.LastIndex(unit, ".") < 1 || unit[0] == '@' || typ == "slice" ||
				strings.ContainsAny(unit, "/ \t") || !slices.Contains(strings.Fields("automount device mount path scope service socket swap target timer"), typ) {
				t.Fatalf("accepted %q, which is no unit a process can be in", s)
			}
		}
	})
}
