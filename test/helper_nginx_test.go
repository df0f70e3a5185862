package test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// startNginx runs a real nginx terminating mTLS (ssl_verify_client on) from
// the helper's files in certDir, on 127.0.0.1 and a free port.
func startNginx(t *testing.T, certDir string) (addr, pidFile string) {
	t.Helper()
	prefix := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	pidFile = filepath.Join(prefix, "nginx.pid")
	conf := fmt.Sprintf(`user root;
daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d ssl;
    ssl_certificate %[3]s/svid.pem;
    ssl_certificate_key %[3]s/svid_key.pem;
    ssl_client_certificate %[3]s/bundle.pem;
    ssl_verify_client on;
    ssl_session_tickets off;
    ssl_session_cache off;
    location / { return 200 "ok\n"; }
  }
}
`, prefix, port, certDir)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/sbin/nginx", "-p", prefix, "-c", confPath)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, pidFile
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not listen within 30s")
		}
	}
}

// servedSerial makes one request over a fresh mTLS connection and returns
// the serial of the server's certificate.
func servedSerial(addr string, conf *tls.Config) (*big.Int, error) {
	d := tls.Dialer{Config: conf}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := io.ReadAll(c)
	if !strings.HasPrefix(string(resp), "HTTP/1.1 200") {
		return nil, fmt.Errorf("response %q: %v", resp, err)
	}
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// The Done-means test: the real agent issues 20 s SVIDs; the helper rotates
// nginx's files and reloads it through its PID file; the served serial
// changes and a client polling throughout never sees a failed handshake.
func TestHelperNginxRotation(t *testing.T) {
	d := startDev(t, "--svid-ttl", "20s")
	certDir := filepath.Join(t.TempDir(), "certs")
	// The helper and the test client both run as root, which dev registered
	// as spiffe://example.org/dev/root: nginx and its client share it here.
	if out, err := runSignet(t, context.Background(), "helper", "--once", "--socket", d.Addr(), "--cert-dir", certDir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	addr, pidFile := startNginx(t, certDir)
	startSignet(t, nil, "helper", "--socket", d.Addr(), "--cert-dir", certDir, "--pid-file", pidFile, "--renew-signal", "SIGHUP")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(d.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	conf := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString(d.TrustDomain)))

	var mu sync.Mutex
	var failures []error
	serials := map[string]bool{}
	ok := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s, err := servedSerial(addr, conf)
			mu.Lock()
			if err != nil {
				failures = append(failures, err)
			} else {
				ok++
				serials[s.Text(16)] = true
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// A 20 s SVID rotates at about half its life: wait for two new serials.
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		n := len(serials)
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx served %d distinct serials in 90s, want 3", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	<-done
	if len(failures) > 0 {
		t.Fatalf("%d of %d polls failed; first: %v", len(failures), len(failures)+ok, failures[0])
	}
}
