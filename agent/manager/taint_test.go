package manager

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/client"
	"github.com/signetid/signet/agent/workloadapi/workloadapitest"
	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
)

// rotatingServer is an agent API whose operator can switch the active CA
// and push Sync messages that taint the old one, so the test controls each
// message (the real server path is covered end to end by
// test/TestForcedRotation). It signs every CSR with the active CA, for the
// SPIFFE ID /<entry ID>.
type rotatingServer struct {
	api.UnimplementedAgentServiceServer
	push   chan *api.SyncResponse
	signed chan []string // the entry IDs of each BatchSignX509SVID call

	mu     sync.Mutex
	active *testCA
	serial int64
}

func (s *rotatingServer) Sync(_ *api.SyncRequest, stream grpc.ServerStreamingServer[api.SyncResponse]) error {
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case u := <-s.push:
			if err := stream.Send(u); err != nil {
				return err
			}
		}
	}
}

func (s *rotatingServer) BatchSignX509SVID(_ context.Context, req *api.BatchSignX509SVIDRequest) (*api.BatchSignX509SVIDResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &api.BatchSignX509SVIDResponse{}
	var ids []string
	for _, r := range req.Requests {
		csr, err := x509.ParseCertificateRequest(r.Csr)
		if err != nil {
			return nil, err
		}
		s.serial++
		id := spiffeid.RequireFromPath(td, "/"+r.EntryId)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(s.serial), NotBefore: t0, NotAfter: t0.Add(time.Hour), URIs: []*url.URL{id.URL()}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, s.active.cert, csr.PublicKey, s.active.key)
		if err != nil {
			return nil, err
		}
		resp.Svids = append(resp.Svids, &api.X509SVID{EntryId: r.EntryId, CertChain: [][]byte{der}})
		ids = append(ids, r.EntryId)
	}
	slices.Sort(ids)
	s.signed <- ids
	return resp, nil
}

func (s *rotatingServer) activate(ca *testCA) {
	s.mu.Lock()
	s.active = ca
	s.mu.Unlock()
}

func syncMsg(rev int64, roots, tainted []*testCA, entryIDs ...string) *api.SyncResponse {
	b := &api.Bundle{TrustDomain: td.Name()}
	for _, ca := range roots {
		b.X509Authorities = append(b.X509Authorities, ca.cert.Raw)
	}
	for _, ca := range tainted {
		b.TaintedX509Authorities = append(b.TaintedX509Authorities, ca.cert.Raw)
	}
	u := &api.SyncResponse{Revision: rev, Bundle: b}
	for _, id := range entryIDs {
		u.Entries = append(u.Entries, &api.Entry{
			Id: id, SpiffeId: spiffeid.RequireFromPath(td, "/"+id).String(), CreatedAt: t0.Unix(),
			Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}},
		})
	}
	return u
}

// A Sync message that taints the CA which issued the cached SVIDs has them
// re-signed at once, long before half their lifetime, by the new active CA;
// later messages with the same taint re-sign nothing more.
func TestTaintedAuthorityIsResignedAtOnce(t *testing.T) {
	oldCA, newCA := newCA(t), newCA(t)
	srv := &rotatingServer{push: make(chan *api.SyncResponse), signed: make(chan []string, 16), active: oldCA}

	// A minute after the SVIDs were signed: half their lifetime is far off.
	now := func() time.Time { return t0.Add(time.Minute) }
	c, err := cache.New(cache.Options{TrustDomain: td, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	logs := &logtest.Buffer{}
	metrics := NewMetrics(prometheus.NewRegistry())
	m, err := New(Config{
		Server: serveAgentAPI(t, srv), Cache: c, TrustDomain: td, Now: now,
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
		Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, m)
	pushAndWaitSigned := func(u *api.SyncResponse, want ...string) {
		t.Helper()
		select {
		case srv.push <- u:
		case <-time.After(20 * time.Second):
			t.Fatalf("sync %d: the manager opened no Sync stream", u.Revision)
		}
		select {
		case got := <-srv.signed:
			if !slices.Equal(got, want) {
				t.Fatalf("after sync %d: signed %v, want %v", u.Revision, got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("after sync %d: nothing signed, want %v", u.Revision, want)
		}
	}

	pushAndWaitSigned(syncMsg(1, []*testCA{oldCA}, nil, "a", "b"), "a", "b")
	// The operator prepares and activates a new CA, then taints the old one.
	srv.activate(newCA)
	pushAndWaitSigned(syncMsg(2, []*testCA{oldCA, newCA}, []*testCA{oldCA}, "a", "b"), "a", "b")
	// The same taint again, and a new entry: only the new entry is signed,
	// so the re-signed SVIDs are no longer seen as tainted.
	pushAndWaitSigned(syncMsg(3, []*testCA{oldCA, newCA}, []*testCA{oldCA}, "a", "b", "c"), "c")

	for _, es := range c.Entries() {
		if es.Entry.ID == "c" {
			continue // its SVID may still be on its way into the cache
		}
		if es.SVID == nil || !bytes.Equal(es.SVID.Certificates[0].AuthorityKeyId, newCA.cert.SubjectKeyId) {
			t.Errorf("entry %s: SVID not issued by the new CA", es.Entry.ID)
		}
	}
	var signed dto.Metric
	if err := metrics.Signed.WithLabelValues(string(reasonTainted)).Write(&signed); err != nil {
		t.Fatal(err)
	}
	if n := signed.GetCounter().GetValue(); n != 2 {
		t.Errorf("signings for %s = %v, want 2", reasonTainted, n)
	}
	if n := strings.Count(logs.String(), "tainted authority"); n != 1 {
		t.Errorf("%d log lines on tainted SVIDs, want 1 (once per bundle change):\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "count=2") {
		t.Errorf("the log does not say 2 SVIDs were tainted:\n%s", logs)
	}
}

// The manager keeps the taint of the latest own bundle, hands it to the
// client and the JWT cache: a bundle without taint clears it, one that does
// not parse keeps it.
func TestApplyKeepsTheLatestBundlesTaint(t *testing.T) {
	oldCA, newCA := newCA(t), newCA(t)
	jwtCA := workloadapitest.NewCA(t, td.Name()) // signs the JWT-SVIDs, with the tainted key
	var mints atomic.Int32
	c, err := cache.New(cache.Options{TrustDomain: td, MintJWT: func(_ context.Context, entryID string, aud []string) (*jwtsvid.SVID, error) {
		mints.Add(1)
		return jwtCA.JWTSVID(spiffeid.RequireFromPath(td, "/"+entryID), aud, "")
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var handed client.Taint
	m, err := New(Config{
		Server: serveAgentAPI(t, api.UnimplementedAgentServiceServer{}), Cache: c, TrustDomain: td, // not called
		OnBundle: func(_ *spiffebundle.Bundle, t client.Taint) { handed = t },
	})
	if err != nil {
		t.Fatal(err)
	}
	issued := oldCA.svid(t, "/w", 2, time.Hour).Certificates
	var jwtKeys []*api.JWTKey
	for kid, pub := range jwtCA.JWTBundle().JWTAuthorities() {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		jwtKeys = append(jwtKeys, &api.JWTKey{KeyId: kid, PublicKey: der, Tainted: true})
	}

	tainted := syncMsg(1, []*testCA{oldCA, newCA}, []*testCA{oldCA}, "w")
	tainted.Bundle.JwtAuthorities = jwtKeys
	badTaint := syncMsg(2, []*testCA{newCA}, nil, "w")
	badTaint.Bundle.TaintedX509Authorities = [][]byte{[]byte("not DER")}
	otherTD := syncMsg(3, []*testCA{newCA}, nil, "w")
	otherTD.Bundle.TrustDomain = "other.example"
	workload := []selector.Selector{{Type: "unix", Value: "uid:1"}}

	for _, step := range []struct {
		u           *api.SyncResponse
		wantErr     bool
		wantTainted bool
	}{
		{tainted, false, true},
		{badTaint, true, true},
		{otherTD, true, true},
		{syncMsg(4, []*testCA{oldCA, newCA}, nil, "w"), false, false},
	} {
		err := m.apply(step.u)
		if (err != nil) != step.wantErr {
			t.Fatalf("sync %d: apply error %v, want error %v", step.u.Revision, err, step.wantErr)
		}
		if got := m.taint.IssuerOf(issued) != nil; got != step.wantTainted {
			t.Errorf("sync %d: old CA tainted = %v, want %v", step.u.Revision, got, step.wantTainted)
		}
		if got := handed.IssuerOf(issued) != nil; got != step.wantTainted {
			t.Errorf("sync %d: OnBundle handed old CA tainted = %v, want %v", step.u.Revision, got, step.wantTainted)
		}
		// Two fetches: a token of the tainted key is not cached.
		before := mints.Load()
		for range 2 {
			if _, err := c.FetchJWTSVIDs(t.Context(), workload, spiffeid.ID{}, []string{"aud"}); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := mints.Load()-before, map[bool]int32{true: 2, false: 1}[step.wantTainted]; got != want {
			t.Errorf("sync %d: %d mints for two fetches, want %d", step.u.Revision, got, want)
		}
	}
}
