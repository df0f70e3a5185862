package helper

import (
	"context"
	"crypto/tls"
	"math/big"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/signetid/signet/internal/nginxtest"
)

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
			s, err := nginxtest.ServedSerial(context.Background(), addr, conf)
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
	addr, pidFile := nginxtest.Start(t, certDir)
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
	addr, pidFile := nginxtest.Start(b, certDir)
	cfg.PIDFileName = pidFile
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, WithLogger(quietLog())) }()
	defer func() { cancel(); <-done }()
	conf := tlsconfig.MTLSClientConfig(ca.svid(b, "spiffe://example.org/client", time.Hour), ca.bundle(), tlsconfig.AuthorizeID(first.ID))
	serving := func(want *big.Int) {
		for {
			s, err := nginxtest.ServedSerial(context.Background(), addr, conf)
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
