package test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serverEnv is a running `signet server run`.
type serverEnv struct {
	proc        *proc
	Dir         string
	AdminSocket string
	Health      string
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startServerProc(t testing.TB, extra ...string) *serverEnv {
	t.Helper()
	dir := t.TempDir()
	s := &serverEnv{Dir: dir, AdminSocket: filepath.Join(dir, "admin.sock"), Health: freeAddr(t)}
	args := append([]string{"server", "run", "--trust-domain", "example.org", "--data-dir", filepath.Join(dir, "data"),
		"--listen", "127.0.0.1:0", "--admin-socket", s.AdminSocket, "--health-listen", s.Health}, extra...)
	s.proc = startSignet(t, nil, args...)
	s.proc.waitLine(t, "server started", 60*time.Second)
	return s
}

// metrics is the server's Prometheus text exposition.
func (s *serverEnv) metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get("http://" + s.Health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func (s *serverEnv) cli(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runSignet(t, ctx, append(args, "--admin-socket", s.AdminSocket)...)
}

func TestServerCLIRefusesBadIDs(t *testing.T) {
	s := startServerProc(t)
	bad := []string{
		"spiffe:///w", "spiffe://Example.org/w", "spiffe://example.org:8080/w", "spiffe://example.org//w",
		"spiffe://example.org/./w", "spiffe://example.org/../w", "spiffe://example.org/w/", "spiffe://example.org/w%41",
		"spiffe://example.org/" + strings.Repeat("a", 2049-len("spiffe://example.org/")),
		"spiffe://" + strings.Repeat("a", 256) + "/w",
	}
	for _, id := range bad {
		_, err := s.cli(t, "server", "entry", "create", "--spiffe-id", id, "--parent-id", "spiffe://example.org/agent/a", "--selector", "unix:uid:1")
		if err == nil {
			t.Errorf("entry create accepted spiffe id %.60q", id)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "--spiffe-id") || strings.Count(strings.TrimSpace(msg[strings.LastIndex(msg, ": exit status"):]), "\n") > 0 {
			t.Errorf("unclear or multi-line error for %.60q: %v", id, err)
		}
	}
	for _, sel := range []string{"unix:uid:abc", "nocolon", "unix:usr:x"} {
		if _, err := s.cli(t, "server", "entry", "create", "--spiffe-id", "spiffe://example.org/w", "--parent-id", "spiffe://example.org/agent/a", "--selector", sel); err == nil || !strings.Contains(err.Error(), "selector") {
			t.Errorf("selector %q: %v", sel, err)
		}
	}
	out, err := s.cli(t, "server", "entry", "list")
	if err != nil || !strings.Contains(out, "Found 0 entries") {
		t.Fatalf("refused entries were stored: %v\n%s", err, out)
	}

	out, err = s.cli(t, "server", "entry", "create", "--spiffe-id", "spiffe://example.org/web", "--parent-id", "spiffe://example.org/agent/a",
		"--selector", "unix:uid:1000", "--dns", "web.example.org", "--x509-ttl", "10m")
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Entry ID: "); ok {
			id = v
		}
	}
	if id == "" {
		t.Fatalf("no `Entry ID: <id>` line in:\n%s", out)
	}
	if out, err = s.cli(t, "server", "entry", "show", "--id", id); err != nil || !strings.Contains(out, "web.example.org") || !strings.Contains(out, "10m0s") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if out, err = s.cli(t, "server", "entry", "update", "--id", id, "--hint", "internal"); err != nil || !strings.Contains(out, "Hint: internal") {
		t.Fatalf("update: %v\n%s", err, out)
	}
	if _, err = s.cli(t, "server", "entry", "delete", "--id", id); err != nil {
		t.Fatal(err)
	}
	if _, err = s.cli(t, "server", "entry", "show", "--id", id); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("show after delete: %v", err)
	}
}

func TestServerCLITokenBundleHealth(t *testing.T) {
	s := startServerProc(t)
	tok, err := s.cli(t, "server", "token", "generate", "--ttl", "5m")
	if err != nil {
		t.Fatal(err)
	}
	if tok = strings.TrimSpace(tok); strings.ContainsAny(tok, " \n:") || len(tok) < 32 {
		t.Fatalf("token generate must print the token alone, got %q", tok)
	}
	pemOut, err := s.cli(t, "server", "bundle", "show")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode([]byte(pemOut)); b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("bundle show --format pem printed:\n%s", pemOut)
	}
	doc, err := s.cli(t, "server", "bundle", "show", "--format", "spiffe")
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct {
			Use string `json:"use"`
			Kid string `json:"kid"`
			X5c []any  `json:"x5c"`
		} `json:"keys"`
		Sequence *uint64 `json:"spiffe_sequence"`
	}
	if err := json.Unmarshal([]byte(doc), &jwks); err != nil || jwks.Sequence == nil {
		t.Fatalf("spiffe bundle: %v\n%s", err, doc)
	}
	uses := map[string]int{}
	for _, k := range jwks.Keys {
		uses[k.Use]++
		if k.Use == "x509-svid" && (len(k.X5c) != 1 || k.Kid != "") {
			t.Errorf("x509-svid key must have one x5c and no kid: %+v", k)
		}
		if k.Use == "jwt-svid" && k.Kid == "" {
			t.Errorf("jwt-svid key without kid: %+v", k)
		}
	}
	if uses["x509-svid"] != 1 || uses["jwt-svid"] != 1 {
		t.Fatalf("spiffe bundle key uses %v", uses)
	}
	for _, path := range []string{"/live", "/ready"} {
		resp, err := http.Get("http://" + s.Health + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s = %d", path, resp.StatusCode)
		}
	}
	body := s.metrics(t)
	for _, m := range []string{"signet_server_entries 0", "signet_server_agents 0", "go_goroutines"} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

func TestServerAdminSocketRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	s := startServerProc(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	asNobody := func() (string, error) {
		cmd := exec.CommandContext(ctx, signetBin(t), "server", "agent", "list", "--admin-socket", s.AdminSocket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The socket's directory and mode keep uid 65534 out: say what to do.
	if out, err := asNobody(); err == nil || !strings.Contains(out, "permission denied on the server's admin socket") || !strings.Contains(out, "run this as root or as the user the server runs as") {
		t.Fatalf("admin call as uid 65534, socket unreachable: err=%v output=%s", err, out)
	}
	// Let uid 65534 reach the socket file so the refusal comes from SO_PEERCRED.
	for _, d := range []string{filepath.Dir(s.Dir), s.Dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(s.AdminSocket, 0o777); err != nil {
		t.Fatal(err)
	}
	if out, err := asNobody(); err == nil || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("admin call as uid 65534: err=%v output=%s", err, out)
	}
}

func TestServerRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(cfg, []byte("trust_domain = \"example.org\"\nsvid_tll = \"1h\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := runSignet(t, ctx, "server", "run", "--config", cfg, "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "svid_tll") {
		t.Fatalf("unknown config key: %v", err)
	}
	_, err = runSignet(t, ctx, "server", "run", "--trust-domain", "Bad.Org", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "trust") {
		t.Fatalf("bad trust domain: %v", err)
	}
}

// The config file's log_format and log_level apply (the flags override them).
func TestServerConfigLogSettings(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte("log_format = \"json\"\nlog_level = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServerProc(t, "--config", conf)
	line := s.proc.waitLine(t, "server started", 10*time.Second)
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] != "server started" {
		t.Fatalf("log line is not the file's JSON format: %q (%v)", line, err)
	}
}
