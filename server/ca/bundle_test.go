package ca_test

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

func TestBundleDocuments(t *testing.T) {
	// Two servers' authorities make one bundle: the union.
	a, b := newManager(t, ca.Config{}), newManager(t, ca.Config{})
	auths := append(a.Authorities(), b.Authorities()...)
	bundle, err := ca.NewBundle(td, auths, 7, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	pemData := ca.MarshalBundlePEM(bundle)
	var n int
	for rest := pemData; ; n++ {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
	}
	if n != 2 {
		t.Errorf("PEM bundle holds %d certificates, want 2", n)
	}

	doc, err := ca.MarshalBundleJSON(bundle)
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct {
			Use string   `json:"use"`
			Kid string   `json:"kid"`
			X5c []string `json:"x5c"`
		} `json:"keys"`
		Sequence    uint64 `json:"spiffe_sequence"`
		RefreshHint int64  `json:"spiffe_refresh_hint"`
	}
	if err := json.Unmarshal(doc, &jwks); err != nil {
		t.Fatal(err)
	}
	uses := map[string]int{}
	for _, k := range jwks.Keys {
		uses[k.Use]++
		switch k.Use {
		case "x509-svid":
			if len(k.X5c) != 1 || k.Kid != "" {
				t.Errorf("x509-svid key: %d x5c, kid %q; want one x5c and no kid", len(k.X5c), k.Kid)
			}
		case "jwt-svid":
			if k.Kid == "" {
				t.Error("jwt-svid key without kid")
			}
		}
	}
	if uses["x509-svid"] != 2 || uses["jwt-svid"] != 2 {
		t.Errorf("uses = %v, want 2 x509-svid and 2 jwt-svid", uses)
	}
	if jwks.Sequence != 7 || jwks.RefreshHint != 300 {
		t.Errorf("sequence %d, refresh hint %d; want 7 and 300", jwks.Sequence, jwks.RefreshHint)
	}

	// The document round-trips through go-spiffe.
	parsed, err := spiffebundle.Parse(td, doc)
	if err != nil {
		t.Fatal(err)
	}
	if !parsed.Equal(bundle) {
		t.Error("parsed bundle differs")
	}
	if !bytes.Equal(ca.MarshalBundlePEM(parsed), pemData) {
		t.Error("PEM of the parsed bundle differs")
	}
}

func TestNewBundleRefusesBadAuthorities(t *testing.T) {
	for _, a := range []ca.Authority{
		{Kind: ca.KindX509, KeyID: "x", Data: []byte("junk")},
		{Kind: ca.KindJWT, KeyID: "k", Data: []byte("junk")},
		{Kind: ca.KindJWT, KeyID: "", Data: nil},
		{Kind: "wit", KeyID: "k"},
	} {
		if _, err := ca.NewBundle(td, []ca.Authority{a}, 1, 0); err == nil {
			t.Errorf("NewBundle accepted %+v", a)
		}
	}
}
