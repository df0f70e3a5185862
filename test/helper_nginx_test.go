package test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/signetid/signet/internal/nginxtest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// The Done-means test: the real agent issues 20 s SVIDs; the helper rotates
// nginx's files and reloads it through its PID file; the served serial
// changes and a client polling throughout never sees a failed handshake.
func TestHelperNginxRotation(t *testing.T) {
	t.Parallel() // mostly waits: runs beside the other long end-to-end tests
	d := startDev(t, "--svid-ttl", "20s")
	certDir := filepath.Join(t.TempDir(), "certs")
	// The helper and the test client both run as root, which dev registered
	// as spiffe://example.org/dev/root: nginx and its client share it here.
	if out, err := runSignet(t, context.Background(), "helper", "--once", "--socket", d.Addr(), "--cert-dir", certDir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	addr, pidFile := nginxtest.Start(t, certDir)
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
			s, err := nginxtest.ServedSerial(context.Background(), addr, conf)
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
