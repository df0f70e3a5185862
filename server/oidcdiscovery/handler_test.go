package oidcdiscovery

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// bundleSource is a real SQLite store and the catalog over it: the source
// the server gives the handler.
type bundleSource struct {
	st  store.Store
	cat *catalog.Catalog
}

func newBundleSource(t testing.TB) *bundleSource {
	t.Helper()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "signet.db"), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat, err := catalog.New(ctx, st, td, logger)
	if err != nil {
		t.Fatal(err)
	}
	return &bundleSource{st: st, cat: cat}
}

func (b *bundleSource) bundle() catalog.Bundle {
	snap, _ := b.cat.Current()
	return snap.OwnBundle(td)
}

// put publishes an authority, as a server does, and refreshes the catalog.
func (b *bundleSource) put(t testing.TB, kind store.AuthorityKind, kid string, data []byte) {
	t.Helper()
	ctx := context.Background()
	a := store.Authority{TrustDomain: td.Name(), Kind: kind, KeyID: kid, Data: data, ExpiresAt: time.Now().Add(time.Hour)}
	if err := b.st.PutAuthorities(ctx, []store.Authority{a}); err != nil {
		t.Fatal(err)
	}
	if err := b.cat.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
}

// newKey publishes a new P-256 JWT key of the given kind and returns its kid
// and public key.
func (b *bundleSource) newKey(t testing.TB, kind store.AuthorityKind) (string, *ecdsa.PublicKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 8)
	rand.Read(id)
	kid := hex.EncodeToString(id)
	b.put(t, kind, kid, der)
	return kid, &k.PublicKey
}

func (b *bundleSource) drop(t testing.TB, kid string) {
	t.Helper()
	if _, err := b.st.DeleteAuthorities(context.Background(), td.Name(), store.JWTAuthority, []string{kid}); err != nil {
		t.Fatal(err)
	}
	if err := b.cat.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func newTestHandler(t testing.TB, issuer string, src *bundleSource, setKeyUse bool, logger *slog.Logger) *Handler {
	t.Helper()
	h, err := NewHandler(HandlerOptions{Issuer: issuer, Bundle: src.bundle, SetKeyUse: setKeyUse, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func request(h http.Handler, method, path string, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "https://oidc.example.org"+path, nil)
	for k, v := range header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// jwks decodes a /keys answer with go-jose, as relying parties do.
func jwks(t *testing.T, w *httptest.ResponseRecorder) jose.JSONWebKeySet {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("GET /keys: %d %s", w.Code, w.Body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(w.Body.Bytes(), &set); err != nil {
		t.Fatalf("JWKS %s: %v", w.Body, err)
	}
	return set
}

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	slices.Sort(out)
	return out
}

func TestHandlerRoutes(t *testing.T) {
	src := newBundleSource(t)
	src.newKey(t, store.JWTAuthority)
	h := newTestHandler(t, "https://oidc.example.org", src, false, nil)
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantBody   bool
	}{
		{"discovery GET", http.MethodGet, "/.well-known/openid-configuration", 200, true},
		{"discovery HEAD", http.MethodHead, "/.well-known/openid-configuration", 200, false},
		{"keys GET", http.MethodGet, "/keys", 200, true},
		{"keys HEAD", http.MethodHead, "/keys", 200, false},
		{"keys POST", http.MethodPost, "/keys", 405, true},
		{"discovery PUT", http.MethodPut, "/.well-known/openid-configuration", 405, true},
		{"discovery DELETE", http.MethodDelete, "/.well-known/openid-configuration", 405, true},
		{"root", http.MethodGet, "/", 404, true},
		{"keys with a trailing slash", http.MethodGet, "/keys/", 404, true},
		{"discovery with a trailing slash", http.MethodGet, "/.well-known/openid-configuration/", 404, true},
		{"discovery under a prefix", http.MethodGet, "/x/.well-known/openid-configuration", 404, true},
		{"unknown path, other method", http.MethodPost, "/token", 404, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := request(h, tt.method, tt.path, nil)
			if w.Code != tt.wantStatus {
				t.Fatalf("%s %s: %d, want %d (%s)", tt.method, tt.path, w.Code, tt.wantStatus, w.Body)
			}
			if got := w.Body.Len() > 0; got != tt.wantBody {
				t.Errorf("body %q, want a body: %v", w.Body, tt.wantBody)
			}
			switch tt.wantStatus {
			case 200:
				if ct, cc := w.Header().Get("Content-Type"), w.Header().Get("Cache-Control"); ct != "application/json" || cc != "public, max-age=60" {
					t.Errorf("Content-Type %q, Cache-Control %q", ct, cc)
				}
				// HEAD announces the length GET sends.
				get := request(h, http.MethodGet, tt.path, nil)
				if cl := w.Header().Get("Content-Length"); cl == "" || cl != get.Header().Get("Content-Length") {
					t.Errorf("Content-Length %q, GET's %q", cl, get.Header().Get("Content-Length"))
				}
			case 405:
				if a := w.Header().Get("Allow"); a != "GET, HEAD" {
					t.Errorf("Allow %q", a)
				}
			}
		})
	}
}

func TestDiscoveryDocument(t *testing.T) {
	tests := []struct {
		issuer  string
		path    string // where the document is
		notHere string // where it is not
	}{
		{"https://oidc.example.org", "/.well-known/openid-configuration", "/oidc/.well-known/openid-configuration"},
		{"https://oidc.example.org:8443/tenant-1", "/tenant-1/.well-known/openid-configuration", "/.well-known/openid-configuration"},
		{"http://127.0.0.1:8080", "/.well-known/openid-configuration", "/keys/.well-known/openid-configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.issuer, func(t *testing.T) {
			h := newTestHandler(t, tt.issuer, newBundleSource(t), false, nil)
			w := request(h, http.MethodGet, tt.path, nil)
			if w.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", tt.path, w.Code, w.Body)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"issuer":                                tt.issuer,
				"jwks_uri":                              tt.issuer + "/keys",
				"authorization_endpoint":                "",
				"response_types_supported":              []any{"id_token"},
				"subject_types_supported":               []any{"public"},
				"id_token_signing_alg_values_supported": []any{"RS256", "ES256", "ES384"},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("document %v\nwant     %v", got, want)
			}
			keysPath := strings.TrimSuffix(tt.path, "/.well-known/openid-configuration") + "/keys"
			if w := request(h, http.MethodGet, keysPath, nil); w.Code != http.StatusOK {
				t.Errorf("GET %s (jwks_uri): %d", keysPath, w.Code)
			}
			if w := request(h, http.MethodGet, tt.notHere, nil); w.Code != http.StatusNotFound {
				t.Errorf("GET %s: %d, want 404", tt.notHere, w.Code)
			}
		})
	}
}

func TestNewHandlerRefuses(t *testing.T) {
	src := newBundleSource(t)
	for _, opts := range []HandlerOptions{
		{Issuer: "https://oidc.example.org/", Bundle: src.bundle},
		{Issuer: "oidc.example.org", Bundle: src.bundle},
		{Issuer: "https://oidc.example.org"},
	} {
		if _, err := NewHandler(opts); err == nil {
			t.Errorf("NewHandler(issuer %q, bundle source %v) accepted", opts.Issuer, opts.Bundle != nil)
		}
	}
}

func TestKeys(t *testing.T) {
	for _, setKeyUse := range []bool{false, true} {
		t.Run(map[bool]string{false: "without set_key_use", true: "with set_key_use"}[setKeyUse], func(t *testing.T) {
			src := newBundleSource(t)
			kid, pub := src.newKey(t, store.JWTAuthority)
			// An X.509 authority (here a key, so that only its kind keeps it
			// out) is no JWT signing key.
			x509Kid, _ := src.newKey(t, store.X509Authority)
			h := newTestHandler(t, "https://oidc.example.org", src, setKeyUse, nil)
			w := request(h, http.MethodGet, "/keys", nil)
			set := jwks(t, w)
			if got := kids(set); !slices.Equal(got, []string{kid}) {
				t.Fatalf("kids %v, want [%s] (not the X.509 authority %s)", got, kid, x509Kid)
			}
			k := set.Keys[0]
			if got, ok := k.Key.(*ecdsa.PublicKey); !ok || !got.Equal(pub) {
				t.Errorf("key %#v, want the published public key", k.Key)
			}
			wantUse := map[bool]string{false: "", true: "sig"}[setKeyUse]
			if k.Algorithm != "ES256" || k.Use != wantUse {
				t.Errorf("alg %q use %q, want ES256 and %q", k.Algorithm, k.Use, wantUse)
			}
			var raw struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
				t.Fatal(err)
			}
			if _, has := raw.Keys[0]["use"]; has != setKeyUse {
				t.Errorf("key %v: use present %v, want %v", raw.Keys[0], has, setKeyUse)
			}
		})
	}
}

// TestKeysAlgorithm: each key type of jwt_key_type carries the alg it signs
// with, so relying parties that require alg (or only RS256) pick the key.
func TestKeysAlgorithm(t *testing.T) {
	gen := map[string]func() (any, error){
		"ES256": func() (any, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
		"ES384": func() (any, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) },
		"RS256": func() (any, error) { return rsa.GenerateKey(rand.Reader, 2048) },
		"":      func() (any, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) },
	}
	src := newBundleSource(t)
	want := map[string]string{}
	for alg, g := range gen {
		k, err := g()
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(k.(interface{ Public() crypto.PublicKey }).Public())
		if err != nil {
			t.Fatal(err)
		}
		kid := "kid-" + alg
		src.put(t, store.JWTAuthority, kid, der)
		want[kid] = alg
	}
	set := jwks(t, request(newTestHandler(t, "https://oidc.example.org", src, false, nil), http.MethodGet, "/keys", nil))
	if len(set.Keys) != len(want) {
		t.Fatalf("%d keys, want %d", len(set.Keys), len(want))
	}
	for _, k := range set.Keys {
		if k.Algorithm != want[k.KeyID] {
			t.Errorf("key %s: alg %q, want %q", k.KeyID, k.Algorithm, want[k.KeyID])
		}
	}
}

func TestKeysEmptyBundle(t *testing.T) {
	h := newTestHandler(t, "https://oidc.example.org", newBundleSource(t), false, nil)
	w := request(h, http.MethodGet, "/keys", nil)
	if body := strings.TrimSpace(w.Body.String()); w.Code != 200 || body != `{"keys":[]}` {
		t.Fatalf("empty bundle: %d %s, want an empty key list", w.Code, body)
	}
}

// TestKeysFollowBundle: a rotation shows at the next request, and until the
// bundle changes every request is answered with the bytes marshalled once.
func TestKeysFollowBundle(t *testing.T) {
	src := newBundleSource(t)
	h := newTestHandler(t, "https://oidc.example.org", src, false, nil)
	k1, _ := src.newKey(t, store.JWTAuthority)

	first := request(h, http.MethodGet, "/keys", nil)
	if got := kids(jwks(t, first)); !slices.Equal(got, []string{k1}) {
		t.Fatalf("kids %v, want [%s]", got, k1)
	}
	cached := h.keys.Load()
	etag := first.Header().Get("ETag")
	for range 3 {
		w := request(h, http.MethodGet, "/keys", nil)
		if h.keys.Load() != cached || w.Body.String() != first.Body.String() || w.Header().Get("ETag") != etag {
			t.Fatal("the JWKS was marshalled again without a bundle change")
		}
	}
	if w := request(h, http.MethodGet, "/keys", http.Header{"If-None-Match": {etag}}); w.Code != http.StatusNotModified {
		t.Fatalf("If-None-Match the current ETag: %d, want 304", w.Code)
	}

	// A new key (prepared, then active) joins: both verify meanwhile.
	k2, _ := src.newKey(t, store.JWTAuthority)
	w := request(h, http.MethodGet, "/keys", nil)
	if got, want := kids(jwks(t, w)), slices.Sorted(slices.Values([]string{k1, k2})); !slices.Equal(got, want) {
		t.Fatalf("after adding %s: kids %v, want %v", k2, got, want)
	}
	if h.keys.Load() == cached || w.Header().Get("ETag") == etag {
		t.Fatal("the cached JWKS and its ETag outlived the bundle change")
	}
	if w := request(h, http.MethodGet, "/keys", http.Header{"If-None-Match": {etag}}); w.Code != http.StatusOK {
		t.Fatalf("If-None-Match an old ETag: %d, want 200", w.Code)
	}

	// The old key is revoked: it leaves.
	src.drop(t, k1)
	if got := kids(jwks(t, request(h, http.MethodGet, "/keys", nil))); !slices.Equal(got, []string{k2}) {
		t.Fatalf("after dropping %s: kids %v, want [%s]", k1, got, k2)
	}
}

func TestKeysLeaveOutUnreadableKey(t *testing.T) {
	var log logtest.Buffer
	src := newBundleSource(t)
	good, _ := src.newKey(t, store.JWTAuthority)
	src.put(t, store.JWTAuthority, "broken", []byte("not a key"))
	h := newTestHandler(t, "https://oidc.example.org", src, false, log.Logger())
	if got := kids(jwks(t, request(h, http.MethodGet, "/keys", nil))); !slices.Equal(got, []string{good}) {
		t.Fatalf("kids %v, want [%s]: the unreadable key left out, the good one served", got, good)
	}
	if s := log.String(); !strings.Contains(s, "left out") || !strings.Contains(s, "kid=broken") {
		t.Errorf("log %q does not name the key left out", s)
	}
}

// BenchmarkKeys is a GET /keys of a bundle of three JWT keys, answered
// from the cache (the bundle does not change).
func BenchmarkKeys(b *testing.B) {
	src := newBundleSource(b)
	for range 3 {
		src.newKey(b, store.JWTAuthority)
	}
	h := newTestHandler(b, "https://oidc.example.org", src, false, nil)
	b.ReportAllocs()
	for b.Loop() {
		if w := request(h, http.MethodGet, "/keys", nil); w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
