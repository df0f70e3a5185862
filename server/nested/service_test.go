package nested

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/nested/bundlev1"
	"github.com/signetid/signet/server/nested/svidv1"
	"github.com/signetid/signet/server/nested/types"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func id(path string) spiffeid.ID { return spiffeid.RequireFromPath(td, path) }

// harness is the upstream side with a real CA, a SQLite store holding the
// CA's authorities (as the server publishes them) and a catalog over it.
// Handlers are called directly; the caller's identity travels in the
// context, where the server's TLS check would have put it.
type harness struct {
	svc   *Service
	ca    *ca.Manager
	store store.Store
	cat   *catalog.Catalog
	now   time.Time // the service's clock
	// forward, when set, stands for the publication further upstream.
	forward func(context.Context, ca.Authority) error
}

type callerKey struct{}

// as is the context of a request from the holder of id's X509-SVID.
func as(id spiffeid.ID) context.Context {
	return context.WithValue(context.Background(), callerKey{}, id)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(dir, "signet.db"), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := ca.New(ctx, ca.Config{TrustDomain: td, DataDir: filepath.Join(dir, "ca"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	var auths []store.Authority
	for _, a := range m.Authorities() {
		auths = append(auths, store.Authority{TrustDomain: td.Name(), Kind: store.AuthorityKind(a.Kind), KeyID: a.KeyID, Data: a.Data, ExpiresAt: a.ExpiresAt})
	}
	if err := st.PutAuthorities(ctx, auths); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(ctx, st, td, logger)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{ca: m, store: st, cat: cat, now: time.Now()}
	h.svc = NewService(ServiceConfig{
		TrustDomain: td, Catalog: cat, Store: st, CA: m, RefreshHint: 5 * time.Minute, Logger: logger,
		Now: func() time.Time { return h.now },
		Authenticate: func(ctx context.Context) (spiffeid.ID, error) {
			caller, ok := ctx.Value(callerKey{}).(spiffeid.ID)
			if !ok {
				return spiffeid.ID{}, status.Error(codes.Unauthenticated, "X509-SVID required")
			}
			return caller, nil
		},
		Forward: func(ctx context.Context, k ca.Authority) error {
			if h.forward == nil {
				return nil
			}
			return h.forward(ctx, k)
		},
	})
	return h
}

// entry registers an entry for path under an agent, with the downstream
// flag as given and an expiry (zero: never).
func (h *harness) entry(t *testing.T, path string, downstream bool, expires time.Time) {
	t.Helper()
	_, err := h.store.CreateEntry(context.Background(), registry.Entry{
		SPIFFEID: id(path), ParentID: id("/agent/a"), Selectors: []selector.Selector{{Type: "unix", Value: "uid:1"}},
		Downstream: downstream, ExpiresAt: expires,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cat.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// storedJWT returns the store's JWT authorities by kid, and the sequence.
func (h *harness) storedJWT(t *testing.T) (map[string]store.Authority, int64) {
	t.Helper()
	auths, seq, err := h.store.ListAuthorities(context.Background(), td.Name())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Authority{}
	for _, a := range auths {
		if a.Kind == store.JWTAuthority {
			out[a.KeyID] = a
		}
	}
	return out, seq
}

func (h *harness) ownJWTKey(t *testing.T) ca.Authority {
	t.Helper()
	for _, a := range h.ca.Authorities() {
		if a.Kind == ca.KindJWT {
			return a
		}
	}
	t.Fatal("the CA has no JWT key")
	return ca.Authority{}
}

func (h *harness) x509Roots() [][]byte {
	var out [][]byte
	for _, a := range h.ca.Authorities() {
		if a.Kind == ca.KindX509 {
			out = append(out, a.Data)
		}
	}
	return out
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: %v (code %v), want %v", what, err, got, want)
	}
}

func newKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pkix(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func csrFor(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Only the holder of an unexpired downstream entry's SVID gets a CA; what
// it gets is a CA for its key under the trust domain's roots, which the
// response names.
func TestNewDownstreamX509CA(t *testing.T) {
	h := newHarness(t)
	now := h.now
	h.entry(t, "/signet-east", true, time.Time{})
	h.entry(t, "/web", false, time.Time{})
	h.entry(t, "/signet-old", true, now.Add(time.Hour))
	key := newKey(t, elliptic.P256())
	req := &svidv1.NewDownstreamX509CARequest{Csr: csrFor(t, key), PreferredTtl: 1800}

	_, err := h.svc.NewDownstreamX509CA(context.Background(), req)
	wantCode(t, "no X509-SVID", err, codes.Unauthenticated)
	for _, tc := range []struct {
		name   string
		caller spiffeid.ID
		at     time.Time
	}{
		{"no entry for the caller", id("/signet-west"), now},
		{"an entry without downstream", id("/web"), now},
		{"a downstream entry expired", id("/signet-old"), now.Add(2 * time.Hour)},
		{"the parent agent", id("/agent/a"), now},
	} {
		h.now = tc.at
		resp, err := h.svc.NewDownstreamX509CA(as(tc.caller), req)
		wantCode(t, tc.name, err, codes.PermissionDenied)
		if resp != nil {
			t.Errorf("%s: a response with the refusal", tc.name)
		}
	}
	h.now = now

	resp, err := h.svc.NewDownstreamX509CA(as(id("/signet-east")), req)
	if err != nil {
		t.Fatalf("NewDownstreamX509CA: %v", err)
	}
	if len(resp.CaCertChain) != 1 {
		t.Fatalf("chain of %d certificates under a self-signed CA, want 1", len(resp.CaCertChain))
	}
	cert, err := x509.ParseCertificate(resp.CaCertChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		t.Errorf("certificate IsCA %v, for the CSR's key %v", cert.IsCA, key.PublicKey.Equal(cert.PublicKey))
	}
	if life := time.Until(cert.NotAfter); life > 30*time.Minute || life < 29*time.Minute {
		t.Errorf("lifetime %v left, want the 30m asked for", life)
	}
	if !slices.EqualFunc(resp.X509Authorities, h.x509Roots(), slices.Equal) {
		t.Errorf("x509_authorities are not the bundle's roots")
	}
	bundle, err := h.svc.GetBundle(context.Background(), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for i, a := range bundle.X509Authorities {
		if !slices.Equal(a.Asn1, resp.X509Authorities[i]) {
			t.Errorf("x509_authorities[%d] differs from GetBundle's", i)
		}
		root, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(root)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the downstream CA does not verify against the bundle: %v", err)
	}

	// The time the entry expires at is past; at one second before it the
	// entry still admits.
	h.now = now.Add(time.Hour - time.Second)
	if _, err := h.svc.NewDownstreamX509CA(as(id("/signet-old")), req); err != nil {
		t.Errorf("a downstream entry before its expiry: %v", err)
	}
	h.now = now

	for _, tc := range []struct {
		name string
		req  *svidv1.NewDownstreamX509CARequest
	}{
		{"garbage CSR", &svidv1.NewDownstreamX509CARequest{Csr: []byte("not a CSR")}},
		{"no CSR", &svidv1.NewDownstreamX509CARequest{}},
		{"RSA-1024 CSR", &svidv1.NewDownstreamX509CARequest{Csr: csrFor(t, rsaKey(t, 1024))}},
		{"negative preferred_ttl", &svidv1.NewDownstreamX509CARequest{Csr: req.Csr, PreferredTtl: -1}},
	} {
		_, err := h.svc.NewDownstreamX509CA(as(id("/signet-east")), tc.req)
		wantCode(t, tc.name, err, codes.InvalidArgument)
	}
}

func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// GetBundle needs no identity and returns the store's bundle, trimmed to
// the output mask when there is one.
func TestGetBundle(t *testing.T) {
	h := newHarness(t)
	own := h.ownJWTKey(t)
	_, seq := h.storedJWT(t)
	check := func(t *testing.T, b *types.Bundle, x509s, jwts, hint, sequence bool) {
		t.Helper()
		if b.TrustDomain != td.Name() {
			t.Errorf("trust domain %q", b.TrustDomain)
		}
		var gotRoots [][]byte
		for _, a := range b.X509Authorities {
			gotRoots = append(gotRoots, a.Asn1)
		}
		if want := h.x509Roots(); x509s != slices.EqualFunc(gotRoots, want, slices.Equal) || x509s == (len(gotRoots) == 0) {
			t.Errorf("x509_authorities: %d, want them %v", len(gotRoots), x509s)
		}
		if jwts {
			if len(b.JwtAuthorities) != 1 || b.JwtAuthorities[0].KeyId != own.KeyID || !slices.Equal(b.JwtAuthorities[0].PublicKey, own.Data) ||
				b.JwtAuthorities[0].ExpiresAt != own.ExpiresAt.Unix() {
				t.Errorf("jwt_authorities %v, want the CA's key %s", b.JwtAuthorities, own.KeyID)
			}
		} else if len(b.JwtAuthorities) != 0 {
			t.Errorf("jwt_authorities %v, want none", b.JwtAuthorities)
		}
		if want := map[bool]int64{true: 300, false: 0}[hint]; b.RefreshHint != want {
			t.Errorf("refresh_hint %d, want %d", b.RefreshHint, want)
		}
		if want := map[bool]uint64{true: uint64(seq), false: 0}[sequence]; b.SequenceNumber != want || sequence && want == 0 {
			t.Errorf("sequence_number %d, want %d (nonzero)", b.SequenceNumber, want)
		}
	}
	for _, tc := range []struct {
		name                        string
		mask                        *types.BundleMask
		x509s, jwts, hint, sequence bool
	}{
		{"no mask: everything", nil, true, true, true, true},
		{"all set", &types.BundleMask{X509Authorities: true, JwtAuthorities: true, RefreshHint: true, SequenceNumber: true}, true, true, true, true},
		{"roots only", &types.BundleMask{X509Authorities: true}, true, false, false, false},
		{"JWT keys and sequence", &types.BundleMask{JwtAuthorities: true, SequenceNumber: true}, false, true, false, true},
		{"empty mask: the trust domain alone", &types.BundleMask{}, false, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := h.svc.GetBundle(context.Background(), &bundlev1.GetBundleRequest{OutputMask: tc.mask})
			if err != nil {
				t.Fatal(err)
			}
			check(t, b, tc.x509s, tc.jwts, tc.hint, tc.sequence)
		})
	}
}

// A downstream server's JWT key joins the bundle once; a kid is never
// taken over; the key is sent further upstream on every call, so a retry
// after a failed forward completes it.
func TestPublishJWTAuthority(t *testing.T) {
	h := newHarness(t)
	ctx := as(id("/signet-east"))
	h.entry(t, "/signet-east", true, time.Time{})
	h.entry(t, "/web", false, time.Time{})
	own := h.ownJWTKey(t)
	exp := h.now.Add(time.Hour).Truncate(time.Second)
	keyDER := pkix(t, &newKey(t, elliptic.P256()).PublicKey)
	req := &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: "east-1", PublicKey: keyDER, ExpiresAt: exp.Unix()}}
	var forwarded []ca.Authority
	h.forward = func(_ context.Context, k ca.Authority) error {
		forwarded = append(forwarded, k)
		return nil
	}
	_, seq0 := h.storedJWT(t)

	_, err := h.svc.PublishJWTAuthority(as(id("/web")), req)
	wantCode(t, "a caller without a downstream entry", err, codes.PermissionDenied)
	_, err = h.svc.PublishJWTAuthority(context.Background(), req)
	wantCode(t, "no X509-SVID", err, codes.Unauthenticated)
	if stored, seq := h.storedJWT(t); seq != seq0 || len(stored) != 1 || len(forwarded) != 0 {
		t.Fatalf("refused callers changed the store (sequence %d -> %d, %d keys) or were forwarded (%d)", seq0, seq, len(stored), len(forwarded))
	}

	resp, err := h.svc.PublishJWTAuthority(ctx, req)
	if err != nil {
		t.Fatalf("PublishJWTAuthority: %v", err)
	}
	if kids := jwtKIDs(resp.JwtAuthorities); !slices.Equal(kids, sorted(own.KeyID, "east-1")) {
		t.Errorf("response jwt_authorities %v, want own and east-1", kids)
	}
	stored, seq1 := h.storedJWT(t)
	if got, ok := stored["east-1"]; !ok || !slices.Equal(got.Data, keyDER) || !got.ExpiresAt.Equal(exp) || got.Tainted {
		t.Fatalf("stored east-1 = %+v (present %v), want the key expiring at %v", got, ok, exp)
	}
	want := ca.Authority{Kind: ca.KindJWT, KeyID: "east-1", Data: keyDER, ExpiresAt: exp}
	if len(forwarded) != 1 || !sameAuthority(forwarded[0], want) {
		t.Errorf("forwarded %+v, want east-1 once", forwarded)
	}
	b, err := h.svc.GetBundle(context.Background(), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if kids := jwtKIDs(b.JwtAuthorities); !slices.Equal(kids, sorted(own.KeyID, "east-1")) {
		t.Errorf("GetBundle's jwt_authorities %v, want own and east-1", kids)
	}

	// The same key again: nothing written, forwarded again.
	if _, err := h.svc.PublishJWTAuthority(ctx, req); err != nil {
		t.Fatalf("the same key again: %v", err)
	}
	if _, seq := h.storedJWT(t); seq != seq1 {
		t.Errorf("publishing the same key again changed the bundle (sequence %d -> %d)", seq1, seq)
	}
	if len(forwarded) != 2 {
		t.Errorf("forwarded %d times, want 2 (every call)", len(forwarded))
	}

	other := pkix(t, &newKey(t, elliptic.P256()).PublicKey)
	for _, tc := range []struct {
		name string
		kid  string
	}{
		{"another key under a downstream's kid", "east-1"},
		{"another key under the server's own kid", own.KeyID},
	} {
		_, err := h.svc.PublishJWTAuthority(ctx, &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: tc.kid, PublicKey: other, ExpiresAt: exp.Unix()}})
		wantCode(t, tc.name, err, codes.AlreadyExists)
	}
	after, seq := h.storedJWT(t)
	if seq != seq1 || !slices.Equal(after["east-1"].Data, keyDER) || !slices.Equal(after[own.KeyID].Data, own.Data) || len(forwarded) != 2 {
		t.Error("a refused kid changed the store or was forwarded")
	}

	_, err = h.svc.PublishJWTAuthority(ctx, &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: "east-2", PublicKey: other}})
	wantCode(t, "a key without expiry", err, codes.InvalidArgument)
	if _, seq := h.storedJWT(t); seq != seq1 {
		t.Error("a refused key changed the store")
	}

	// The next server up cannot be reached: Unavailable, and the retry
	// completes it.
	h.forward = func(_ context.Context, k ca.Authority) error {
		forwarded = append(forwarded, k)
		return fmt.Errorf("upstream server unreachable")
	}
	req2 := &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: "east-2", PublicKey: other, ExpiresAt: exp.Unix()}}
	_, err = h.svc.PublishJWTAuthority(ctx, req2)
	wantCode(t, "forward fails", err, codes.Unavailable)
	if !strings.Contains(err.Error(), "east-2") || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("forward failure %q does not name the key and the cause", err)
	}
	if last := forwarded[len(forwarded)-1]; !sameAuthority(last, ca.Authority{Kind: ca.KindJWT, KeyID: "east-2", Data: other, ExpiresAt: exp}) {
		t.Errorf("forwarded %+v, want east-2", last)
	}
	h.forward = nil
	if _, err := h.svc.PublishJWTAuthority(ctx, req2); err != nil {
		t.Errorf("retry once the next server is back: %v", err)
	}
}

func sameAuthority(a, b ca.Authority) bool {
	return a.Kind == b.Kind && a.KeyID == b.KeyID && slices.Equal(a.Data, b.Data) && a.ExpiresAt.Equal(b.ExpiresAt) && a.Tainted == b.Tainted
}

func jwtKIDs(keys []*types.JWTKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.KeyId)
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// A bundle holds at most maxJWTKeys JWT keys: a new one beyond is
// refused, a known one is still acknowledged.
func TestPublishJWTAuthorityCap(t *testing.T) {
	h := newHarness(t)
	ctx := as(id("/signet-east"))
	h.entry(t, "/signet-east", true, time.Time{})
	exp := h.now.Add(time.Hour).Truncate(time.Second)
	der := pkix(t, &newKey(t, elliptic.P256()).PublicKey)
	stored, _ := h.storedJWT(t)
	var fill []store.Authority
	for i := len(stored); i < maxJWTKeys; i++ {
		fill = append(fill, store.Authority{TrustDomain: td.Name(), Kind: store.JWTAuthority, KeyID: fmt.Sprintf("fill-%d", i), Data: der, ExpiresAt: exp})
	}
	if err := h.store.PutAuthorities(context.Background(), fill); err != nil {
		t.Fatal(err)
	}
	if err := h.cat.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	known := &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: fill[0].KeyID, PublicKey: der, ExpiresAt: exp.Unix()}}
	if _, err := h.svc.PublishJWTAuthority(ctx, known); err != nil {
		t.Errorf("a key already in a full bundle: %v", err)
	}
	_, err := h.svc.PublishJWTAuthority(ctx, &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: "one-more", PublicKey: der, ExpiresAt: exp.Unix()}})
	wantCode(t, "a new key in a full bundle", err, codes.ResourceExhausted)
	if stored, _ := h.storedJWT(t); len(stored) != maxJWTKeys {
		t.Errorf("%d JWT keys stored, want %d", len(stored), maxJWTKeys)
	}
}

func TestCheckJWTKey(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(time.Hour).Unix()
	p256 := pkix(t, &newKey(t, elliptic.P256()).PublicKey)
	p384 := pkix(t, &newKey(t, elliptic.P384()).PublicKey)
	p224 := pkix(t, &newKey(t, elliptic.P224()).PublicKey)
	rsa2048 := pkix(t, &rsaKey(t, 2048).PublicKey)
	rsa1024 := pkix(t, &rsaKey(t, 1024).PublicKey)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ed := pkix(t, edPub)
	key := func(kid string, pub []byte, exp int64) *types.JWTKey {
		return &types.JWTKey{KeyId: kid, PublicKey: pub, ExpiresAt: exp}
	}
	for _, tc := range []struct {
		name    string
		k       *types.JWTKey
		wantErr string // "" for accepted
	}{
		{"P-256", key("k", p256, exp), ""},
		{"P-384", key("k", p384, exp), ""},
		{"RSA-2048", key("k", rsa2048, exp), ""},
		{"kid of the longest length", key(strings.Repeat("k", maxKeyIDLen), p256, exp), ""},
		{"expires in exactly the longest life", key("k", p256, now.Add(maxJWTKeyLife).Unix()), ""},
		{"none", nil, "jwt_authority is required"},
		{"empty kid", key("", p256, exp), "key_id is empty"},
		{"long kid", key(strings.Repeat("k", maxKeyIDLen+1), p256, exp), "at most 128"},
		{"no expiry", key("k", p256, 0), "expires_at is required"},
		{"expired", key("k", p256, now.Add(-time.Second).Unix()), "expired at"},
		{"expires now", key("k", p256, now.Unix()), "expired at"},
		{"more than a year", key("k", p256, now.Add(maxJWTKeyLife+time.Second).Unix()), "more than a year"},
		{"tainted", &types.JWTKey{KeyId: "k", PublicKey: p256, ExpiresAt: exp, Tainted: true}, "tainted"},
		{"garbage key", key("k", []byte("not a key"), exp), "public_key is not"},
		{"no key", key("k", nil, exp), "public_key is not"},
		{"RSA-1024", key("k", rsa1024, exp), "public_key is not"},
		{"P-224", key("k", p224, exp), "public_key is not"},
		{"Ed25519", key("k", ed, exp), "public_key is not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := checkJWTKey(tc.k, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("checkJWTKey = %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := ca.Authority{Kind: ca.KindJWT, KeyID: tc.k.KeyId, Data: tc.k.PublicKey, ExpiresAt: time.Unix(tc.k.ExpiresAt, 0)}
			if !sameAuthority(got, want) {
				t.Errorf("checkJWTKey = %+v, want %+v", got, want)
			}
		})
	}
}

// A key another server stored after this one's last catalog load is not
// replaced: the store adds a kid only while it is free.
func TestPublishJWTAuthorityKidTakenSinceSnapshot(t *testing.T) {
	h := newHarness(t)
	h.entry(t, "/server/east", true, time.Time{})
	exp := h.now.Add(time.Hour)
	first := pkix(t, newKey(t, elliptic.P256()).Public())
	ctx := context.Background()
	// Another upstream server on the store, unseen by this one's catalog.
	if err := h.store.PutAuthorities(ctx, []store.Authority{{TrustDomain: td.Name(), Kind: store.JWTAuthority, KeyID: "west-2", Data: first, ExpiresAt: exp}}); err != nil {
		t.Fatal(err)
	}
	other := pkix(t, newKey(t, elliptic.P256()).Public())
	_, err := h.svc.PublishJWTAuthority(as(id("/server/east")), &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: "west-2", PublicKey: other, ExpiresAt: exp.Unix()}})
	wantCode(t, "another key under a kid stored since the snapshot", err, codes.AlreadyExists)
	if stored, _ := h.storedJWT(t); !slices.Equal(stored["west-2"].Data, first) {
		t.Error("the stored key was replaced")
	}
	// The same key under it is no conflict.
	if _, err := h.svc.PublishJWTAuthority(as(id("/server/east")), &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: "west-2", PublicKey: first, ExpiresAt: exp.Unix()}}); err != nil {
		t.Errorf("the stored key published again: %v", err)
	}
}

// A JWT key this server revoked cannot come back through a downstream that
// still lists it (it was down during the revocation, say).
func TestPublishJWTAuthorityRevokedHere(t *testing.T) {
	h := newHarness(t)
	h.entry(t, "/server/east", true, time.Time{})
	ctx := context.Background()
	old := h.ownJWTKey(t)
	next, err := h.ca.Prepare(ctx, ca.KindJWT)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ca.Activate(ctx, ca.KindJWT, next.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ca.Taint(ctx, ca.KindJWT, old.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ca.Revoke(ctx, ca.KindJWT, old.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.DeleteAuthorities(ctx, td.Name(), store.JWTAuthority, []string{old.KeyID}); err != nil {
		t.Fatal(err)
	}
	if err := h.cat.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.PublishJWTAuthority(as(id("/server/east")), &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: old.KeyID, PublicKey: old.Data, ExpiresAt: old.ExpiresAt.Unix()}})
	wantCode(t, "a key revoked here", err, codes.FailedPrecondition)
	if stored, _ := h.storedJWT(t); stored[old.KeyID].KeyID != "" {
		t.Error("the revoked key is back in the store")
	}
}
