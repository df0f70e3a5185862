package client

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func testSVID(t testing.TB) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/agent/n1")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// The chain, key and renewal mode travel in one file, so one rename
// replaces them all and a crash can never leave a key beside a certificate
// it does not match. An agent that renews in place (join token) writes the
// file earlier versions wrote, block for block, so a downgrade keeps it.
func TestSVIDFileHoldsChainKeyAndState(t *testing.T) {
	for _, reattestable := range []bool{false, true} {
		t.Run(fmt.Sprintf("reattestable=%v", reattestable), func(t *testing.T) {
			s := store{dir: t.TempDir()}
			want := identity{svid: testSVID(t), reattestable: reattestable}
			if err := s.saveSVID(want); err != nil {
				t.Fatal(err)
			}
			entries, err := os.ReadDir(s.dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != SVIDFile {
				t.Fatalf("data dir holds %v, want only %s", entries, SVIDFile)
			}
			got, err := s.loadSVID()
			if err != nil {
				t.Fatal(err)
			}
			if !got.svid.Certificates[0].Equal(want.svid.Certificates[0]) || !want.svid.PrivateKey.(*ecdsa.PrivateKey).Equal(got.svid.PrivateKey) {
				t.Fatal("loaded SVID differs from the saved one")
			}
			if got.reattestable != reattestable {
				t.Fatalf("loaded reattestable %v, saved %v", got.reattestable, reattestable)
			}
			data, err := os.ReadFile(s.path(SVIDFile))
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
				types = append(types, block.Type)
			}
			wantTypes := []string{"CERTIFICATE", "PRIVATE KEY"}
			if reattestable {
				wantTypes = append(wantTypes, stateBlockType)
			}
			if !slices.Equal(types, wantTypes) {
				t.Fatalf("file blocks %q, want %q", types, wantTypes)
			}
		})
	}
}

// What the state block may say: a file that says something else is refused
// with the reason, not read as renew-in-place.
func TestSVIDFileState(t *testing.T) {
	svid := testSVID(t)
	base, err := encodeSVIDFile(identity{svid: svid})
	if err != nil {
		t.Fatal(err)
	}
	state := func(headers map[string]string) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: stateBlockType, Headers: headers})
	}
	tests := []struct {
		name    string
		data    []byte
		want    bool
		wantErr string
	}{
		{"no state block (earlier versions)", base, false, ""},
		{"reattestable", slices.Concat(base, state(map[string]string{reattestableHeader: "true"})), true, ""},
		{"state block first", slices.Concat(state(map[string]string{reattestableHeader: "true"}), base), true, ""},
		{"explicitly false", slices.Concat(base, state(map[string]string{reattestableHeader: "false"})), false, ""},
		{"unknown value", slices.Concat(base, state(map[string]string{reattestableHeader: "yes"})), false, `Reattestable is "yes"`},
		{"two state blocks", slices.Concat(base, state(map[string]string{reattestableHeader: "true"}), state(nil)), false, "two SIGNET AGENT STATE blocks"},
		{"two keys", slices.Concat(base, base[bytes.Index(base, []byte("-----BEGIN PRIVATE KEY")):]), false, "two PRIVATE KEY blocks"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSVIDFile(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.reattestable != tc.want || !got.svid.Certificates[0].Equal(svid.Certificates[0]) {
				t.Fatalf("parsed reattestable %v (want %v), SVID %s", got.reattestable, tc.want, got.svid.ID)
			}
		})
	}
}

// FuzzParseSVIDFile: whatever the file holds, parsing does not panic, and
// what parses writes back to a file that parses to the same identity.
func FuzzParseSVIDFile(f *testing.F) {
	svid := testSVID(f)
	for _, reattestable := range []bool{false, true} {
		data, err := encodeSVIDFile(identity{svid: svid, reattestable: reattestable})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN SIGNET AGENT STATE-----\nReattestable: true\n\n-----END SIGNET AGENT STATE-----\n"))
	f.Add([]byte("not PEM"))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := parseSVIDFile(data)
		if err != nil {
			return
		}
		again, err := encodeSVIDFile(id)
		if err != nil {
			t.Fatalf("encode a parsed identity: %v", err)
		}
		back, err := parseSVIDFile(again)
		if err != nil {
			t.Fatalf("parse a written file: %v", err)
		}
		if back.reattestable != id.reattestable || back.svid.ID != id.svid.ID || !slices.EqualFunc(back.svid.Certificates, id.svid.Certificates, (*x509.Certificate).Equal) {
			t.Fatalf("round trip changed the identity: %+v -> %+v", id, back)
		}
	})
}

// An agent upgraded from the two-file layout keeps its identity, and the
// next save leaves one file.
func TestLegacyKeyFileIsReadThenRemoved(t *testing.T) {
	s := store{dir: t.TempDir()}
	old := testSVID(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(old.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(SVIDFile), encodeCerts(old.Certificates), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(legacyKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.loadSVID()
	if err != nil || got.svid.ID != old.ID || got.reattestable {
		t.Fatalf("load legacy layout: %+v, %v", got, err)
	}
	if err := s.saveSVID(identity{svid: testSVID(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, legacyKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("legacy key file still there after a save: %v", err)
	}
	if _, err := s.loadSVID(); err != nil {
		t.Fatal(err)
	}
}

func TestSVIDFileWithoutKeyIsAnError(t *testing.T) {
	s := store{dir: t.TempDir()}
	if err := os.WriteFile(s.path(SVIDFile), encodeCerts(testSVID(t).Certificates), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.loadSVID(); err == nil {
		t.Fatal("loadSVID accepted a chain without a key")
	}
}
