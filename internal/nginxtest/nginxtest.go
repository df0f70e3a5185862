// Package nginxtest runs a throwaway nginx terminating mutual TLS from a
// directory of PEM files, for tests of the helper's rotation and reloads.
package nginxtest

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
	"testing"
	"time"
)

// Bin is Debian's nginx, installed by test/setup.sh (`make deps`).
const Bin = "/usr/sbin/nginx"

// Start runs a real nginx (master + worker) on 127.0.0.1 terminating mTLS
// with ssl_verify_client on from the helper's files in certDir (svid.pem,
// svid_key.pem, bundle.pem). It returns the address and the pid file path;
// nginx is stopped when the test ends.
func Start(t testing.TB, certDir string) (addr, pidFile string) {
	t.Helper()
	prefix := t.TempDir()
	port := FreePort(t)
	pidFile = filepath.Join(prefix, "nginx.pid")
	conf := fmt.Sprintf(`user root;
daemon off;
master_process on;
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
	cmd := exec.Command(Bin, "-p", prefix, "-c", confPath)
	out, _ := os.Create(filepath.Join(prefix, "stdout"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Fatalf("nginx exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not listen within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, pidFile
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ServedSerial makes one HTTPS request over a fresh mTLS connection (SPIFFE
// verification of the server, client SVID presented, no session resumption)
// and returns the serial of the certificate the server presented.
func ServedSerial(ctx context.Context, addr string, conf *tls.Config) (*big.Int, error) {
	d := tls.Dialer{Config: conf.Clone()}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// With TLS 1.3 a rejected client cert only shows on the first read.
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := io.ReadAll(c)
	if !strings.HasPrefix(string(resp), "HTTP/1.1 200") {
		return nil, fmt.Errorf("response %q: %v", resp, err)
	}
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
}
