package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/internal/nginxtest"
)

// examples/nginx/nginx.conf as shipped (its paths and ports moved into the
// test's), with a real nginx and files written by the helper: the client
// whose CN the map allows reaches the app, with its certificate passed on;
// another workload's valid SVID gets 403 and never reaches it.
func TestNginxExampleAuthorizesByCN(t *testing.T) {
	d := startDev(t)
	base := t.TempDir()
	dirs := map[string]string{}
	for _, e := range []struct{ name, dns string }{{"web", "web"}, {"frontend", "frontend"}, {"other", "other"}} {
		d.createEntry(t, "--parent-id", d.AgentID, "--spiffe-id", "spiffe://example.org/"+e.name, "--selector", "unix:uid:0",
			"--hint", e.name, "--dns", e.dns)
		dirs[e.name] = filepath.Join(base, e.name)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := runSignet(t, ctx, "helper", "--once", "--socket", d.Addr(), "--cert-dir", dirs[e.name], "--hint", e.name)
		cancel()
		if err != nil {
			t.Fatalf("helper for %s: %v\n%s", e.name, err, out)
		}
	}

	// The app behind nginx: says whether it got the client certificate.
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app: client cert passed: %v\n", r.Header.Get("X-Client-Cert") != "")
	})}
	go app.Serve(appLn)
	t.Cleanup(func() { app.Close() })

	example, err := os.ReadFile("../examples/nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	port := nginxtest.FreePort(t)
	conf := string(example)
	for old, new := range map[string]string{
		"/run/signet/certs":                 dirs["web"],
		"listen 443 ssl;":                   fmt.Sprintf("listen 127.0.0.1:%d ssl;", port),
		"proxy_pass http://127.0.0.1:8080;": "proxy_pass http://" + appLn.Addr().String() + ";",
		"http {": fmt.Sprintf("http {\n  access_log off;\n  client_body_temp_path %[1]s/body;\n  proxy_temp_path %[1]s/proxy;\n"+
			"  fastcgi_temp_path %[1]s/fastcgi;\n  uwsgi_temp_path %[1]s/uwsgi;\n  scgi_temp_path %[1]s/scgi;", prefix),
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("examples/nginx/nginx.conf no longer has %q; update this test", old)
		}
		conf = strings.ReplaceAll(conf, old, new)
	}
	conf = fmt.Sprintf("user root;\ndaemon off;\npid %[1]s/nginx.pid;\nerror_log %[1]s/error.log info;\n", prefix) + conf
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginxtest.Bin, "-p", prefix, "-c", confPath)
	if out, err := exec.Command(nginxtest.Bin, "-t", "-p", prefix, "-c", confPath).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	get := func(client string) (int, string) {
		t.Helper()
		cert, err := tls.LoadX509KeyPair(filepath.Join(dirs[client], "svid.pem"), filepath.Join(dirs[client], "svid_key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		bundle, err := os.ReadFile(filepath.Join(dirs[client], "bundle.pem"))
		if err != nil || !roots.AppendCertsFromPEM(bundle) {
			t.Fatalf("bundle of %s: %v", client, err)
		}
		// The web SVID carries DNS name "web", which the client checks.
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "web"}}}
		var resp *http.Response
		deadline := time.Now().Add(30 * time.Second)
		for {
			if resp, err = hc.Get("https://" + addr + "/"); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("GET as %s: %v", client, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("frontend"); code != http.StatusOK || !strings.Contains(body, "client cert passed: true") {
		t.Fatalf("frontend: %d %q, want 200 from the app with the client certificate", code, body)
	}
	if code, body := get("other"); code != http.StatusForbidden || strings.Contains(body, "app:") {
		t.Fatalf("another workload: %d %q, want nginx's 403", code, body)
	}
}
