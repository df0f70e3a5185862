package helper

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

const nginxBin = "/usr/sbin/nginx"

// startNginx runs a real nginx (master + worker) terminating mTLS with
// ssl_verify_client on from the helper's files in certDir. It returns the
// address and the pid file path.
func startNginx(t testing.TB, certDir string) (addr, pidFile string) {
	t.Helper()
	prefix := t.TempDir()
	port := freePort(t)
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
	cmd := exec.Command(nginxBin, "-p", prefix, "-c", confPath)
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

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// servedSerial makes one HTTPS request over a fresh mTLS connection (SPIFFE
// verification of the server, client SVID presented, no session resumption)
// and returns the serial of the certificate the server presented.
func servedSerial(ctx context.Context, addr string, conf *tls.Config) (*big.Int, error) {
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

// poller polls addr until stopped, recording failures and the last serial.
type poller struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
	last       *big.Int
	stop       chan struct{}
	done       chan struct{}
}

func startPoller(addr string, conf *tls.Config) *poller {
	p := &poller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			s, err := servedSerial(context.Background(), addr, conf)
			p.mu.Lock()
			if err != nil {
				p.failed.Add(1)
				if p.firstErr == nil {
					p.firstErr = err
				}
			} else {
				p.ok.Add(1)
				p.last = s
			}
			p.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return p
}

func (p *poller) lastSerial() *big.Int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func (p *poller) finish(t testing.TB) {
	t.Helper()
	close(p.stop)
	<-p.done
	if p.failed.Load() > 0 {
		t.Errorf("%d of %d handshakes/requests failed; first: %v", p.failed.Load(), p.failed.Load()+p.ok.Load(), p.firstErr)
	}
}

// TestNginxRotationThroughPIDFile: the helper (Run, against a Workload API
// serving rotating SVIDs) writes nginx's files and reloads it through its
// PID file; nginx serves every new certificate and a client polling
// throughout never sees a failed handshake.
func TestNginxRotationThroughPIDFile(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/nginx")
	agent.start()
	first := agent.rotate(time.Hour)

	certDir := filepath.Join(t.TempDir(), "certs")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir, cfg.RenewSignal = agent.addr(), certDir, "SIGHUP"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	written := make(chan Event, 16)
	startHelper := func(pidFile string) {
		cfg.PIDFileName = pidFile
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Run(ctx, cfg, WithLogger(quietLog()), WithOnWrite(func(ev Event) { written <- ev })); err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
	}
	// Write the first set with a one-shot run, as an init container would.
	once := cfg
	once.DaemonMode = false
	if err := Run(ctx, once, WithLogger(quietLog())); err != nil {
		t.Fatal(err)
	}
	addr, pidFile := startNginx(t, certDir)
	startHelper(pidFile)
	<-written

	clientConf := tlsconfig.MTLSClientConfig(ca.svid(t, "spiffe://example.org/client", time.Hour), ca.bundle(), tlsconfig.AuthorizeID(first.ID))
	p := startPoller(addr, clientConf)
	waitFor(t, func() bool { s := p.lastSerial(); return s != nil && s.Cmp(first.Certificates[0].SerialNumber) == 0 })
	for range 3 {
		next := agent.rotate(20 * time.Second)
		waitFor(t, func() bool { s := p.lastSerial(); return s != nil && s.Cmp(next.Certificates[0].SerialNumber) == 0 })
	}
	p.finish(t)
	if p.ok.Load() < 10 {
		t.Errorf("only %d successful polls", p.ok.Load())
	}
}

// BenchmarkRotationToNginx measures a rotation pushed on the Workload API ->
// file set on disk -> nginx reloaded via its PID file -> a new connection
// served the new certificate.
func BenchmarkRotationToNginx(b *testing.B) {
	ca := newTestCA(b, "example.org")
	agent := newFakeAgent(b, ca, "spiffe://example.org/nginx")
	agent.start()
	first := agent.rotate(time.Hour)
	certDir := filepath.Join(b.TempDir(), "certs")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir, cfg.RenewSignal = agent.addr(), certDir, "SIGHUP"
	cfg.Debounce = time.Millisecond
	once := cfg
	once.DaemonMode = false
	if err := Run(context.Background(), once, WithLogger(quietLog())); err != nil {
		b.Fatal(err)
	}
	addr, pidFile := startNginx(b, certDir)
	cfg.PIDFileName = pidFile
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, WithLogger(quietLog())) }()
	defer func() { cancel(); <-done }()
	conf := tlsconfig.MTLSClientConfig(ca.svid(b, "spiffe://example.org/client", time.Hour), ca.bundle(), tlsconfig.AuthorizeID(first.ID))
	serving := func(want *big.Int) {
		for {
			s, err := servedSerial(context.Background(), addr, conf)
			if err != nil {
				b.Fatal(err)
			}
			if s.Cmp(want) == 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	serving(first.Certificates[0].SerialNumber)
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		next := agent.rotate(time.Hour)
		serving(next.Certificates[0].SerialNumber)
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/rotation")
}
