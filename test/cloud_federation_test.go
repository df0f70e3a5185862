package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"

	"github.com/signetid/signet/helper"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/ca"
)

const cloudExample = "../examples/cloud-federation/"

// setKey replaces the value of key on its own line of an HCL file (the
// example's addresses and paths are a cluster's, not a test host's).
func setKey(t *testing.T, conf []byte, key, value string) []byte {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(\s*` + regexp.QuoteMeta(key) + `\s*=\s*).*$`)
	if !re.Match(conf) {
		t.Fatalf("example has no %s line", key)
	}
	return re.ReplaceAll(conf, []byte("${1}"+strings.ReplaceAll(fmt.Sprintf("%q", value), "$", "$$")))
}

// TestCloudFederationExample runs examples/cloud-federation as written, with
// only its addresses and paths moved to this host: the server's part, the
// helper's configuration and the pod that ties the helper's files to the
// cloud SDKs' variables. The token files the helper keeps are what AWS STS
// and Entra ID would be handed, and are checked as they would check them.
func TestCloudFederationExample(t *testing.T) {
	// The pod: the app's token variables name the helper's files.
	podYAML, err := os.ReadFile(cloudExample + "pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeManifests(t, "pod.yaml", podYAML)
	if len(objs) != 1 {
		t.Fatalf("pod.yaml holds %d objects, want a Pod", len(objs))
	}
	pod, ok := objs[0].(*corev1.Pod)
	if !ok {
		t.Fatalf("pod.yaml holds a %T, want a Pod", objs[0])
	}
	var helperC, app *corev1.Container
	for i, c := range pod.Spec.InitContainers {
		if c.Name == "signet-helper" {
			helperC = &pod.Spec.InitContainers[i]
		}
	}
	if len(pod.Spec.Containers) == 1 {
		app = &pod.Spec.Containers[0]
	}
	if helperC == nil || app == nil {
		t.Fatalf("pod.yaml: want an init container signet-helper and one app container")
	}
	if helperC.RestartPolicy == nil || *helperC.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("signet-helper is not a native sidecar (restartPolicy: Always): it would block the app")
	}
	// Pod Security "restricted", which many namespaces enforce.
	if sc := pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod.yaml: want runAsNonRoot and the RuntimeDefault seccomp profile (Pod Security restricted)")
	}
	for _, c := range []*corev1.Container{helperC, app} {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s: want allowPrivilegeEscalation false and all capabilities dropped (Pod Security restricted)", c.Name)
		}
	}
	mountOf := func(c *corev1.Container, volume string) string {
		for _, m := range c.VolumeMounts {
			if m.Name == volume {
				return m.MountPath
			}
		}
		t.Fatalf("container %s does not mount volume %s", c.Name, volume)
		return ""
	}
	args := helperC.Args
	cfgArg := slices.Index(args, "--config")
	if cfgArg < 0 || cfgArg+1 >= len(args) || filepath.Dir(args[cfgArg+1]) != mountOf(helperC, "helper-config") {
		t.Fatalf("helper args %v: want --config inside the helper-config mount", args)
	}
	if p := helperC.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" ||
		!slices.Contains(args, fmt.Sprintf(":%d", p.HTTPGet.Port.IntValue())) {
		t.Errorf("startup probe %+v: want /ready on the --health-listen port, so the app starts after the files exist", helperC.StartupProbe)
	}

	// The helper's configuration, as the helper reads it.
	helperConf, err := os.ReadFile(cloudExample + "helper.conf")
	if err != nil {
		t.Fatal(err)
	}
	hc := helper.NewConfig()
	if err := helper.ParseConfig(helperConf, &hc); err != nil {
		t.Fatalf("helper.conf: %v", err)
	}
	if hc.CertDir != mountOf(helperC, "cloud-tokens") || mountOf(app, "cloud-tokens") != hc.CertDir {
		t.Fatalf("cert_dir %s: want the cloud-tokens mount of both containers", hc.CertDir)
	}
	env := map[string]string{}
	for _, e := range app.Env {
		env[e.Name] = e.Value
	}
	files := map[string]string{} // audience -> file name
	for _, j := range hc.JWTSVIDs {
		files[j.Audience] = j.FileName
	}
	for variable, audience := range map[string]string{
		"AWS_WEB_IDENTITY_TOKEN_FILE": "sts.amazonaws.com",
		"AZURE_FEDERATED_TOKEN_FILE":  "api://AzureADTokenExchange",
	} {
		if files[audience] == "" || env[variable] != filepath.Join(hc.CertDir, files[audience]) {
			t.Errorf("%s=%q: want the helper's file for audience %s (%q in %s)", variable, env[variable], audience, files[audience], hc.CertDir)
		}
	}

	// The server's part, as the server reads it.
	serverConf, err := os.ReadFile(cloudExample + "server.conf")
	if err != nil {
		t.Fatal(err)
	}
	fc, err := server.ParseConfigFile(serverConf)
	if err != nil {
		t.Fatalf("server.conf: %v", err)
	}
	sc, err := fc.Resolve()
	if err != nil {
		t.Fatalf("server.conf: %v", err)
	}
	if sc.JWTKeyType != ca.JWTKeyRSA2048 || sc.OIDCDiscovery == nil || !strings.HasPrefix(sc.JWTIssuer, "https://") {
		t.Fatalf("server.conf: key type %s, issuer %q, discovery %+v: want rsa-2048 keys published for an https issuer", sc.JWTKeyType, sc.JWTIssuer, sc.OIDCDiscovery)
	}

	// Run it: the server with the example's keys, an agent, the helper.
	oidcAddr := freeAddr(t)
	issuer := "http://" + oidcAddr
	serverConf = setKey(t, serverConf, "jwt_issuer", issuer)
	serverConf = setKey(t, serverConf, "listen", oidcAddr)
	serverConf = setKey(t, serverConf, "trust_domain", "example.org")
	dir := t.TempDir()
	serverPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(serverPath, serverConf, 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "--config", serverPath)
	want := callerID(t)
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", want.String(), "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid())); err != nil {
		t.Fatal(err)
	}

	certDir := filepath.Join(dir, "cloud")
	helperConf = setKey(t, helperConf, "agent_address", "unix://"+n.socket)
	helperConf = setKey(t, helperConf, "cert_dir", certDir)
	helperPath := filepath.Join(dir, "helper.conf")
	if err := os.WriteFile(helperPath, helperConf, 0o600); err != nil {
		t.Fatal(err)
	}
	health := freeAddr(t)
	startSignet(t, nil, "helper", "--config", helperPath, "--health-listen", health)
	ready := func() bool {
		resp, err := http.Get("http://" + health + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	deadline := time.Now().Add(60 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			t.Fatal("the helper never became ready: no token files")
		}
		time.Sleep(100 * time.Millisecond)
	}

	for audience, name := range files {
		path := filepath.Join(certDir, name)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 (a bearer token)", path, fi.Mode().Perm())
		}
		token, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The SDKs send the file's bytes as they are: a trailing newline
		// would make the token invalid at the cloud.
		if strings.TrimSpace(string(token)) != string(token) {
			t.Errorf("%s: the token has surrounding whitespace: %q", path, token)
		}
		claims := verifyAsRelyingParty(t, issuer, string(token), audience, jose.RS256)
		if claims.Subject != want.String() {
			t.Errorf("%s: sub %s, want %s", path, claims.Subject, want)
		}
	}
}
