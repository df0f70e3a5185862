package manager

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/server/api"
)

func TestParseKeyType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KeyType
		err  bool
	}{
		{"", KeyECP256, false},
		{"ec-p256", KeyECP256, false},
		{"rsa-2048", KeyRSA2048, false},
		{"EC-P256", "", true}, // SPIRE's values are lower case
		{"ec-p384", "", true},
		{"rsa-1024", "", true},
	} {
		got, err := ParseKeyType(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// Workload SVIDs get keys of the configured type: the CSR the server signs
// is for that key, and the cached SVID holds it.
func TestWorkloadKeyType(t *testing.T) {
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			srv := &rotatingServer{push: make(chan *api.SyncResponse), signed: make(chan []string, 16), active: newCA(t)}
			now := func() time.Time { return t0.Add(time.Minute) }
			c, err := cache.New(cache.Options{TrustDomain: td, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			m, err := New(Config{Server: serveAgentAPI(t, srv), Cache: c, TrustDomain: td, Now: now, KeyType: kt,
				Logger: slog.New(slog.DiscardHandler), Metrics: NewMetrics(prometheus.NewRegistry())})
			if err != nil {
				t.Fatal(err)
			}
			runInBackground(t, m)
			select {
			case srv.push <- syncMsg(1, []*testCA{srv.active}, nil, "a"):
			case <-time.After(20 * time.Second):
				t.Fatal("the manager opened no Sync stream")
			}
			select {
			case <-srv.signed:
			case <-time.After(20 * time.Second):
				t.Fatal("nothing signed")
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				es := c.Entries()
				if len(es) == 1 && es[0].SVID != nil {
					switch k := es[0].SVID.PrivateKey.(type) {
					case *ecdsa.PrivateKey:
						if kt != KeyECP256 || k.Curve != elliptic.P256() {
							t.Fatalf("key type %s: got an ECDSA %s key", kt, k.Curve.Params().Name)
						}
					case *rsa.PrivateKey:
						if kt != KeyRSA2048 || k.N.BitLen() != 2048 {
							t.Fatalf("key type %s: got a %d-bit RSA key", kt, k.N.BitLen())
						}
					default:
						t.Fatalf("key type %s: got %T", kt, k)
					}
					if pub, ok := es[0].SVID.Certificates[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(es[0].SVID.PrivateKey.Public()) {
						t.Fatal("the certificate is not for the cached key")
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatal("no SVID cached")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
