package oidcdiscovery

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

// Paths under the issuer's path, SPIRE's.
const (
	ConfigurationPath = "/.well-known/openid-configuration"
	KeysPath          = "/keys"
)

// cacheControl lets relying parties and proxies keep a document for a
// minute: a revoked key leaves their caches within a minute, and a new key
// is published before it signs (and an unknown kid makes OIDC libraries
// fetch again anyway).
const cacheControl = "public, max-age=60"

// HandlerOptions configure a Handler.
type HandlerOptions struct {
	// Issuer is the issuer URL; CheckIssuer must hold.
	Issuer string
	// Bundle returns the trust domain's current bundle (a catalog
	// snapshot's own bundle). Its Sequence says whether it changed.
	Bundle func() catalog.Bundle
	// SetKeyUse sets "use": "sig" on every key.
	SetKeyUse bool
	// Logger receives keys that cannot be served (slog.Default when nil).
	Logger *slog.Logger
}

// Handler serves the discovery document and the JWKS. It is safe for
// concurrent use.
type Handler struct {
	configPath, keysPath string
	config               document
	bundle               func() catalog.Bundle
	setKeyUse            bool
	logger               *slog.Logger

	// keys is the JWKS of the last bundle sequence served.
	keys atomic.Pointer[keySet]
}

// document is a marshalled response.
type document struct {
	body []byte
	etag string
}

func newDocument(body []byte) document {
	sum := sha256.Sum256(body)
	return document{body: body, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`}
}

type keySet struct {
	sequence int64
	document
}

// discovery is the OpenID Provider Metadata served. The values other than
// issuer and jwks_uri are what SPIRE's provider serves: the fields Discovery
// 1.0 requires, for a provider that has no authorization endpoint and only
// issues ID-token-shaped JWTs.
type discovery struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	AuthorizationEndpoint            string   `json:"authorization_endpoint"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
}

// NewHandler checks opts and marshals the discovery document, which never
// changes.
func NewHandler(opts HandlerOptions) (*Handler, error) {
	if err := CheckIssuer(opts.Issuer); err != nil {
		return nil, fmt.Errorf("oidc discovery: issuer %q: %w", opts.Issuer, err)
	}
	if opts.Bundle == nil {
		return nil, errors.New("oidc discovery: no bundle source")
	}
	u, err := url.Parse(opts.Issuer)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(discovery{
		Issuer:                           opts.Issuer,
		JWKSURI:                          opts.Issuer + KeysPath,
		AuthorizationEndpoint:            "",
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{"RS256", "ES256", "ES384"},
	})
	if err != nil {
		return nil, fmt.Errorf("oidc discovery: encode the discovery document: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &Handler{
		configPath: u.Path + ConfigurationPath,
		keysPath:   u.Path + KeysPath,
		config:     newDocument(body),
		bundle:     opts.Bundle,
		setKeyUse:  opts.SetKeyUse,
		logger:     logger,
	}, nil
}

// ServeHTTP answers GET and HEAD for the two documents, 404 elsewhere and
// 405 for other methods. Conditional requests (If-None-Match) get 304.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != h.configPath && r.URL.Path != h.keysPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	doc := h.config
	if r.URL.Path == h.keysPath {
		doc = h.currentKeys().document
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", cacheControl)
	hdr.Set("ETag", doc.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(doc.body))
}

// currentKeys returns the JWKS of the current bundle, marshalled again only
// when the bundle's sequence moved. Two requests racing past a change may
// both marshal; either result is right.
func (h *Handler) currentKeys() *keySet {
	b := h.bundle()
	if ks := h.keys.Load(); ks != nil && ks.sequence == b.Sequence {
		return ks
	}
	ks := &keySet{sequence: b.Sequence, document: newDocument(h.marshalKeys(b))}
	h.keys.Store(ks)
	return ks
}

// marshalKeys builds the JWKS of the bundle's JWT authorities. A key
// that cannot be served is left out and logged (once per bundle sequence).
func (h *Handler) marshalKeys(b catalog.Bundle) []byte {
	keys := []json.RawMessage{}
	for _, a := range b.Authorities {
		if a.Kind != store.JWTAuthority {
			continue
		}
		raw, err := h.marshalKey(a)
		if err != nil {
			h.logger.Error("oidc discovery: JWT authority left out of the JWKS", "kid", a.KeyID, "error", err)
			continue
		}
		keys = append(keys, raw)
	}
	body, _ := json.Marshal(struct {
		Keys []json.RawMessage `json:"keys"`
	}{keys}) // RawMessages from json.Marshal cannot fail to encode
	return body
}

func (h *Handler) marshalKey(a store.Authority) (json.RawMessage, error) {
	pub, err := x509.ParsePKIXPublicKey(a.Data)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	k := jose.JSONWebKey{Key: pub, KeyID: a.KeyID, Algorithm: algorithm(pub)}
	if h.setKeyUse {
		k.Use = "sig"
	}
	return json.Marshal(k)
}

// algorithm is the JWS algorithm a key signs with, for the key types of
// the server's jwt_key_type: ES256 (P-256), ES384 (P-384), RS256 (RSA);
// "" (no alg) for anything else.
func algorithm(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return string(jose.ES256)
		case elliptic.P384():
			return string(jose.ES384)
		}
	case *rsa.PublicKey:
		return string(jose.RS256)
	}
	return ""
}
