package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testCA is one CA of an organisation's PKI, for an upstream authority.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

type caOpts struct {
	name       string
	notBefore  time.Time
	notAfter   time.Time
	isCA       bool
	pathLenMax int // -1: unset
	uriDomains []string
	ekus       []x509.ExtKeyUsage
	key        crypto.Signer // nil: a new P-256 key
}

var serialN int64

// issue creates a certificate signed by parent (self-signed when nil).
func issue(t *testing.T, parent *testCA, o caOpts) *testCA {
	t.Helper()
	key := o.key
	if key == nil {
		key = p256(t)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(10 * 24 * time.Hour)
	}
	serialN++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serialN),
		Subject:               pkix.Name{Organization: []string{"Example Corp"}, CommonName: o.name},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  o.isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		PermittedURIDomains:   o.uriDomains,
		ExtKeyUsage:           o.ekus,
	}
	if o.isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.MaxPathLen = o.pathLenMax
		tmpl.MaxPathLenZero = o.pathLenMax == 0
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func caOf(name string) caOpts { return caOpts{name: name, isCA: true, pathLenMax: -1} }

func writePEM(t *testing.T, path string, blocks ...*pem.Block) string {
	t.Helper()
	var buf bytes.Buffer
	for _, b := range blocks {
		if err := pem.Encode(&buf, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func certBlock(c *testCA) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw} }

func pkcs8Block(t *testing.T, k crypto.Signer) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
}

// diskUpstream writes an upstream CA, its key and the roots as files.
func diskUpstream(t *testing.T, signer *testCA, chain []*testCA, roots ...*testCA) *ca.DiskUpstream {
	t.Helper()
	dir := t.TempDir()
	blocks := []*pem.Block{certBlock(signer)}
	for _, c := range chain {
		blocks = append(blocks, certBlock(c))
	}
	u := &ca.DiskUpstream{
		CertFile: writePEM(t, filepath.Join(dir, "tls.crt"), blocks...),
		KeyFile:  writePEM(t, filepath.Join(dir, "tls.key"), pkcs8Block(t, signer.key)),
	}
	if len(roots) > 0 {
		var rb []*pem.Block
		for _, r := range roots {
			rb = append(rb, certBlock(r))
		}
		u.BundleFile = writePEM(t, filepath.Join(dir, "ca.crt"), rb...)
	}
	return u
}

func signSVID(t *testing.T, m *ca.Manager) []*x509.Certificate {
	t.Helper()
	chain, err := m.SignX509SVID(context.Background(), makeCSR(t, p256(t)), spiffeid.RequireFromPath(td, "/w"), 0, nil)
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	return chain
}

// x509Roots are the DER of the published X.509 authorities.
func x509Roots(m *ca.Manager) [][]byte {
	var out [][]byte
	for _, a := range m.Authorities() {
		if a.Kind == ca.KindX509 {
			out = append(out, a.Data)
		}
	}
	return out
}

// verifyTLS verifies an SVID chain the way a TLS peer (nginx, Go's
// crypto/tls) does, for both uses of an SVID, a minute into its life (the
// tests' clocks are not the real one).
func verifyTLS(t *testing.T, chain []*x509.Certificate, roots ...*x509.Certificate) {
	t.Helper()
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: chain[0].NotBefore.Add(2 * time.Minute)}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts.KeyUsages = []x509.ExtKeyUsage{eku}
		if _, err := chain[0].Verify(opts); err != nil {
			t.Errorf("SVID does not verify for %v: %v", eku, err)
		}
	}
}

func TestUpstreamIntermediate(t *testing.T) {
	root := issue(t, nil, caOf("Example Root"))
	corp := issue(t, root, caOf("Example Issuing CA"))
	dir := t.TempDir()
	cfg := ca.Config{DataDir: dir, Upstream: diskUpstream(t, corp, nil, root)}
	m := newManager(t, cfg)

	if got := x509Roots(m); len(got) != 1 || !bytes.Equal(got[0], root.cert.Raw) {
		t.Fatalf("published X.509 authorities: %d, want exactly the upstream root", len(got))
	}
	chain := signSVID(t, m)
	if len(chain) != 3 {
		t.Fatalf("SVID chain has %d certificates, want leaf, Signet CA, upstream CA", len(chain))
	}
	signet := chain[1]
	if !signet.IsCA || len(signet.URIs) != 1 || signet.URIs[0].String() != td.IDString() {
		t.Errorf("Signet CA: IsCA %v, URIs %v; want a CA for %s", signet.IsCA, signet.URIs, td.IDString())
	}
	if !bytes.Equal(signet.RawIssuer, corp.cert.RawSubject) || !bytes.Equal(chain[2].Raw, corp.cert.Raw) {
		t.Error("Signet CA is not issued by the upstream CA, or the upstream CA is not in the chain")
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(chain), bundleOf(t, m)); err != nil {
		t.Errorf("go-spiffe does not verify the SVID against the published bundle: %v", err)
	}
	verifyTLS(t, chain, root.cert)

	server, err := m.SignServerSVID(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(server.Certificates), bundleOf(t, m)); err != nil {
		t.Errorf("server SVID: %v", err)
	}

	// A restart reads the chain and roots back.
	m2 := newManager(t, cfg)
	if got := x509Roots(m2); len(got) != 1 || !bytes.Equal(got[0], root.cert.Raw) {
		t.Error("after a restart the published roots changed")
	}
	chain2 := signSVID(t, m2)
	if len(chain2) != 3 || !bytes.Equal(chain2[1].Raw, signet.Raw) {
		t.Error("after a restart the SVID chain lost the CA or the CA changed")
	}
	verifyTLS(t, chain2, root.cert)
	// The data dir's files stay private.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rootsFiles int
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".roots.crt") {
			rootsFiles++
		}
		if fi, err := e.Info(); err == nil && !e.IsDir() && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if rootsFiles != 1 {
		t.Errorf("%d roots files in the data dir, want 1", rootsFiles)
	}
}

func rawChain(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// A self-signed upstream (no bundle file) is the root: it is published and
// never sent in chains; intermediates between it and the upstream CA are.
func TestUpstreamChains(t *testing.T) {
	root := issue(t, nil, caOf("Example Root"))
	policy := issue(t, root, caOf("Example Policy CA"))
	issuing := issue(t, policy, caOf("Example Issuing CA"))
	for _, tc := range []struct {
		name     string
		upstream *ca.DiskUpstream
		wantTail []*testCA // after the Signet CA
	}{
		{"self-signed upstream", diskUpstream(t, root, nil), nil},
		{"root listed in the cert file too", diskUpstream(t, policy, []*testCA{root}, root), []*testCA{policy}},
		{"two upstream levels", diskUpstream(t, issuing, []*testCA{policy}, root), []*testCA{issuing, policy}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, ca.Config{Upstream: tc.upstream})
			if got := x509Roots(m); len(got) != 1 || !bytes.Equal(got[0], root.cert.Raw) {
				t.Fatalf("published %d X.509 authorities, want the root only", len(got))
			}
			chain := signSVID(t, m)
			if len(chain) != 2+len(tc.wantTail) {
				t.Fatalf("SVID chain has %d certificates, want %d", len(chain), 2+len(tc.wantTail))
			}
			for i, c := range tc.wantTail {
				if !bytes.Equal(chain[2+i].Raw, c.cert.Raw) {
					t.Errorf("chain[%d] is %q, want %q", 2+i, chain[2+i].Subject.CommonName, c.cert.Subject.CommonName)
				}
			}
			verifyTLS(t, chain, root.cert)
		})
	}
}

// Keys come in PKCS#8, SEC 1 and PKCS#1; RSA upstreams are common.
func TestUpstreamKeyEncodings(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := p256(t)
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		key   crypto.Signer
		block *pem.Block
	}{
		{"RSA PKCS#1", rsaKey, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}},
		{"EC SEC 1", ecKey, &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := caOf("Example Root")
			o.key = tc.key
			root := issue(t, nil, o)
			u := diskUpstream(t, root, nil)
			writePEM(t, u.KeyFile, tc.block)
			m := newManager(t, ca.Config{Upstream: u})
			verifyTLS(t, signSVID(t, m), root.cert)
		})
	}
}

// A bad upstream is refused at start, with a reason, and nothing is written.
func TestUpstreamRefused(t *testing.T) {
	root := issue(t, nil, caOf("Example Root"))
	otherRoot := issue(t, nil, caOf("Other Root"))
	corp := issue(t, root, caOf("Example Issuing CA"))
	leafOpts := caOf("Not a CA")
	leafOpts.isCA = false
	notCA := issue(t, root, leafOpts)
	expiredOpts := caOf("Expired CA")
	expiredOpts.notBefore, expiredOpts.notAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	expired := issue(t, root, expiredOpts)
	pathZero := caOf("Path length 0")
	pathZero.pathLenMax = 0
	leafOnly := issue(t, root, pathZero)
	constrained := caOf("Only other.org")
	constrained.uriDomains = []string{"other.org"}
	otherDomain := issue(t, root, constrained)
	serverOnly := caOf("Server auth only")
	serverOnly.ekus = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tlsServers := issue(t, root, serverOnly)

	mismatched := diskUpstream(t, corp, nil, root)
	writePEM(t, mismatched.KeyFile, pkcs8Block(t, p256(t)))
	garbage := diskUpstream(t, corp, nil, root)
	if err := os.WriteFile(garbage.CertFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyInCert := diskUpstream(t, corp, nil, root)
	writePEM(t, keyInCert.CertFile, pkcs8Block(t, corp.key))
	missing := diskUpstream(t, corp, nil, root)
	missing.KeyFile += ".missing"

	for _, tc := range []struct {
		name     string
		upstream *ca.DiskUpstream
		want     string
	}{
		{"no files", &ca.DiskUpstream{}, "cert_file_path and key_file_path are required"},
		{"missing key file", missing, "no such file"},
		{"cert file not PEM", garbage, "no CERTIFICATE PEM block"},
		{"key in the cert file", keyInCert, "PEM block 1 is a PRIVATE KEY"},
		{"key of another certificate", mismatched, "does not match certificate"},
		{"not a CA", diskUpstream(t, notCA, nil, root), "is not a CA"},
		{"not self-signed and no bundle", diskUpstream(t, corp, nil), "set bundle_file_path"},
		{"bundle of another root", diskUpstream(t, corp, nil, otherRoot), "does not chain to a root"},
		{"expired", diskUpstream(t, expired, nil, root), "does not chain to a root"},
		{"path length 0", diskUpstream(t, leafOnly, nil, root), "would not verify"},
		{"name constraints exclude the trust domain", diskUpstream(t, otherDomain, nil, root), "would not verify"},
		{"server auth only", diskUpstream(t, tlsServers, nil, root), "would not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := ca.New(context.Background(), ca.Config{TrustDomain: td, DataDir: dir, Upstream: tc.upstream, Logger: quietLogger()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ca.New: %v; want an error containing %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("a refused start wrote %d files to the data dir", len(entries))
			}
		})
	}

	// On a server that already has a CA, a broken upstream is refused at
	// start too, and the existing CA is left as it was.
	dir := t.TempDir()
	cfg := ca.Config{DataDir: dir, Upstream: diskUpstream(t, corp, nil, root)}
	before := x509Roots(newManager(t, cfg))
	snapshot := readDir(t, dir)
	cfg.Upstream = mismatched
	cfg.TrustDomain, cfg.Logger = td, quietLogger()
	if _, err := ca.New(context.Background(), cfg); err == nil {
		t.Fatal("restart with a mismatched upstream key succeeded")
	}
	if !maps.Equal(snapshot, readDir(t, dir)) {
		t.Error("a refused restart changed the data dir")
	}
	cfg.Upstream = diskUpstream(t, corp, nil, root)
	if got := x509Roots(newManager(t, cfg)); !slices.EqualFunc(got, before, bytes.Equal) {
		t.Error("roots changed across a refused restart")
	}
}

func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(data)
	}
	return out
}

// Replacing the upstream's files (a new root, as when an organisation
// rotates its PKI) takes effect at the next rotation without a restart: the
// new root is published before any SVID depends on it, and the old one
// stays until nothing signed under it is valid.
func TestUpstreamReplacedFiles(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	rootOpts := caOf("Root A")
	rootOpts.notBefore, rootOpts.notAfter = t0.Add(-time.Hour), t0.Add(365*24*time.Hour)
	rootA := issue(t, nil, rootOpts)
	rootOpts.name = "Root B"
	rootB := issue(t, nil, rootOpts)
	u := diskUpstream(t, rootA, nil)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	// An SVID signed under root A just before the switch, checked after it.
	clk.Set(t0.Add(activate - time.Minute))
	oldChain := signSVID(t, m)
	clk.Set(t0)

	// The organisation moves to root B.
	writePEM(t, u.CertFile, certBlock(rootB))
	writePEM(t, u.KeyFile, pkcs8Block(t, rootB.key))

	clk.Set(t0.Add(prepare))
	rotate(t, m)
	if got := x509Roots(m); len(got) != 2 || !slices.ContainsFunc(got, func(d []byte) bool { return bytes.Equal(d, rootB.cert.Raw) }) {
		t.Fatalf("after the next CA is prepared: %d roots, want roots A and B", len(got))
	}
	if c := signSVID(t, m); !bytes.Equal(c[1].Raw, oldChain[1].Raw) {
		t.Error("the CA under root B signs before its activation time")
	}
	clk.Set(t0.Add(activate))
	rotate(t, m)
	newChain := signSVID(t, m)
	if bytes.Equal(newChain[1].RawIssuer, oldChain[1].RawIssuer) {
		t.Fatal("after activation the signing CA is still under root A")
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(oldChain), bundleOf(t, m)); err != nil {
		t.Errorf("an SVID signed under root A no longer verifies after activation: %v", err)
	}
	clk.Set(t0.Add(expire))
	rotate(t, m)
	if got := x509Roots(m); len(got) != 1 || !bytes.Equal(got[0], rootB.cert.Raw) {
		t.Errorf("after the CA under root A expired: %d roots, want root B only", len(got))
	}
}

// An upstream certificate that expires before the CA TTL cuts the CA, and
// so every SVID, short to it.
func TestUpstreamExpiresFirst(t *testing.T) {
	o := caOf("Short-lived root")
	o.notAfter = time.Now().Add(90 * time.Minute)
	root := issue(t, nil, o)
	var log bytes.Buffer
	m := newManager(t, ca.Config{SVIDTTL: time.Hour, Upstream: diskUpstream(t, root, nil), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	chain := signSVID(t, m)
	if chain[1].NotAfter.After(root.cert.NotAfter) {
		t.Errorf("CA not after %v is later than the upstream's %v", chain[1].NotAfter, root.cert.NotAfter)
	}
	if !strings.Contains(log.String(), "expires before the CA TTL") {
		t.Error("no warning that the upstream certificate cuts the CA short")
	}
	for _, a := range m.Authorities() {
		if a.Kind == ca.KindX509 && a.ExpiresAt.After(root.cert.NotAfter) {
			t.Error("the root is published past its own expiry")
		}
	}
}

// Moving an existing self-signed trust domain under an upstream keeps the
// old root published while its CA signs, and adds the upstream's.
func TestUpstreamAdoptedLater(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	dir := t.TempDir()
	self := newManager(t, ca.Config{DataDir: dir, Clock: clk.Now, SVIDTTL: svidTTL})
	selfRoots := x509Roots(self)

	o := caOf("Example Root")
	o.notBefore, o.notAfter = t0.Add(-time.Hour), t0.Add(365*24*time.Hour)
	root := issue(t, nil, o)
	u := diskUpstream(t, root, nil)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{DataDir: dir, Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	if got := x509Roots(m); !slices.EqualFunc(got, selfRoots, bytes.Equal) {
		t.Fatal("adding an upstream changed the published roots before a rotation")
	}
	if c := signSVID(t, m); len(c) != 1 {
		t.Error("the self-signed CA's SVIDs gained a chain")
	}
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	got := x509Roots(m)
	if len(got) != 2 || !slices.ContainsFunc(got, func(d []byte) bool { return bytes.Equal(d, root.cert.Raw) }) {
		t.Fatalf("after the next CA is prepared: %d roots, want the self-signed and the upstream root", len(got))
	}
	clk.Set(t0.Add(expire))
	rotate(t, m)
	if got := x509Roots(m); len(got) != 1 || !bytes.Equal(got[0], root.cert.Raw) {
		t.Error("the self-signed root outlived its CA")
	}
	verifyTLS(t, signSVID(t, m), root.cert)
}

// CAs under one upstream share its root: it stays published until the last
// of them expires, not the first.
func TestUpstreamSharedRoot(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	o := caOf("Example Root")
	o.notBefore, o.notAfter = t0.Add(-time.Hour), t0.Add(365*24*time.Hour)
	root := issue(t, nil, o)
	u := diskUpstream(t, root, nil)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	var roots []ca.Authority
	for _, a := range m.Authorities() {
		if a.Kind == ca.KindX509 {
			roots = append(roots, a)
		}
	}
	if len(roots) != 1 {
		t.Fatalf("%d X.509 authorities with two CAs under one root, want 1", len(roots))
	}
	if want := t0.Add(prepare + expire); roots[0].ExpiresAt.Before(want) {
		t.Errorf("the root may be dropped at %v, before the next CA expires at %v", roots[0].ExpiresAt, want)
	}
}
