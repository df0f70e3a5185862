package helper

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

func testConfig(dir string) Config {
	c := NewConfig()
	c.AgentAddress, c.CertDir = "unix:///nonexistent.sock", dir
	if err := c.Validate(os.Getenv); err != nil {
		panic(err)
	}
	return c
}

func writeSVIDSet(t testing.TB, w *Writer, cfg Config, ca *testCA) []File {
	t.Helper()
	files, err := cfg.Files(Material{SVID: ca.svid(t, "spiffe://example.org/web", time.Hour), Bundles: x509bundle.NewSet(ca.bundle())}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(files); err != nil {
		t.Fatal(err)
	}
	return files
}

func TestWriterSetModesOwner(t *testing.T) {
	ca := newTestCA(t, "example.org")
	dir := filepath.Join(t.TempDir(), "not", "yet")
	cfg := testConfig(dir)
	w := NewWriter(dir, 101, 104)
	writeSVIDSet(t, w, cfg, ca)

	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem"))
	if err != nil {
		t.Fatalf("written pair does not load: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	pool := x509.NewCertPool()
	bundlePEM, _ := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	pool.AppendCertsFromPEM(bundlePEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("leaf does not verify against bundle.pem: %v", err)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "svid_key.pem"))
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key is not PKCS#8 PEM")
	} else if _, err := x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
		t.Errorf("key: %v", err)
	}
	checkModeOwner := func() {
		t.Helper()
		for name, mode := range map[string]os.FileMode{"svid.pem": 0o644, "svid_key.pem": 0o600, "bundle.pem": 0o644} {
			st, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			sys := st.Sys().(*syscall.Stat_t)
			if st.Mode().Perm() != mode || sys.Uid != 101 || sys.Gid != 104 {
				t.Errorf("%s: mode %#o uid %d gid %d, want %#o 101 104", name, st.Mode().Perm(), sys.Uid, sys.Gid, mode)
			}
		}
	}
	checkModeOwner()

	// Someone loosens the key and changes its owner: the next write restores both.
	real, _ := filepath.EvalSymlinks(filepath.Join(dir, "svid_key.pem"))
	if err := os.Chmod(real, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(real, 0, 0); err != nil {
		t.Fatal(err)
	}
	writeSVIDSet(t, w, cfg, ca)
	checkModeOwner()

	// Old generations are pruned: at most current + previous remain.
	for range 3 {
		writeSVIDSet(t, w, cfg, ca)
	}
	gens, _ := filepath.Glob(filepath.Join(dir, genPrefix+"*"))
	if len(gens) != 2 {
		t.Errorf("%d generations on disk, want 2", len(gens))
	}
}

func TestWriterReplacesPlainFiles(t *testing.T) {
	// A cert dir left by spiffe-helper holds regular files; they become links.
	ca := newTestCA(t, "example.org")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "svid.pem"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir)
	writeSVIDSet(t, NewWriter(dir, -1, -1), cfg, ca)
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem")); err != nil {
		t.Fatal(err)
	}
}

func TestWriterFailureKeepsPreviousSet(t *testing.T) {
	ca := newTestCA(t, "example.org")
	dir := t.TempDir()
	cfg := testConfig(dir)
	w := NewWriter(dir, -1, -1)
	writeSVIDSet(t, w, cfg, ca)
	before, _ := os.ReadFile(filepath.Join(dir, "svid.pem"))

	// Root ignores mode bits, so make the directory immutable instead.
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", dir).Run() })

	files, err := cfg.Files(Material{SVID: ca.svid(t, "spiffe://example.org/web", time.Hour), Bundles: x509bundle.NewSet(ca.bundle())}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(files); err == nil {
		t.Fatal("write into an immutable dir reported success")
	}
	after, _ := os.ReadFile(filepath.Join(dir, "svid.pem"))
	if !bytes.Equal(before, after) {
		t.Error("failed write changed svid.pem")
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem")); err != nil {
		t.Errorf("previous set no longer loads: %v", err)
	}
}

// A reader that resolves the set once never pairs a cert with another key,
// and plain reads of the named files never see a partial file.
func TestWriterConcurrentReaderConsistent(t *testing.T) {
	ca := newTestCA(t, "example.org")
	dir := t.TempDir()
	cfg := testConfig(dir)
	w := NewWriter(dir, -1, -1)
	writeSVIDSet(t, w, cfg, ca)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, bad atomic.Int64
	var firstErr atomic.Value
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				set, err := filepath.EvalSymlinks(filepath.Join(dir, dataLink))
				var pe *fs.PathError
				if errors.As(err, &pe) && errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(filepath.Base(pe.Path), genPrefix) {
					// ..data was read, then two swaps pruned the set it
					// named before we reached it; resolve again.
					continue
				}
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				_, err = tls.LoadX509KeyPair(filepath.Join(set, "svid.pem"), filepath.Join(set, "svid_key.pem"))
				if errors.Is(err, fs.ErrNotExist) {
					// Two swaps happened since we resolved: that set was
					// pruned whole; resolve again.
					continue
				}
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				cert, err := os.ReadFile(filepath.Join(dir, "svid.pem"))
				if b, _ := pem.Decode(cert); err != nil || b == nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				reads.Add(1)
			}
		}()
	}
	for range 50 {
		writeSVIDSet(t, w, cfg, ca)
	}
	for reads.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d reads inconsistent; first: %v", bad.Load(), reads.Load(), firstErr.Load())
	}
}

func TestFilesBundlesAndJWT(t *testing.T) {
	ca := newTestCA(t, "example.org")
	fed := newTestCA(t, "partner.test")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = "/s", "/c"
	cfg.IncludeFederatedDomains = true
	cfg.JWTSVIDs = []JWTSVIDConfig{{Audience: "db", FileName: "db.token"}}
	cfg.JWTBundleFileName = "jwt_bundle.json"
	if err := cfg.Validate(os.Getenv); err != nil {
		t.Fatal(err)
	}
	tok := ca.jwt(t, "spiffe://example.org/web", []string{"db"}, time.Minute)
	js, err := jwtsvid.ParseInsecure(tok, []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := cfg.Files(Material{
		SVID:       ca.svid(t, "spiffe://example.org/web", time.Hour),
		Bundles:    x509bundle.NewSet(ca.bundle(), fed.bundle()),
		JWTSVIDs:   map[string]*jwtsvid.SVID{"db.token": js},
		JWTBundles: jwtbundle.NewSet(ca.jwtBundle()),
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]File{}
	for _, f := range files {
		byName[f.Name] = f
	}
	if n := bytes.Count(byName["bundle.pem"].Data, []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Errorf("bundle.pem holds %d certs, want own + federated", n)
	}
	if string(byName["db.token"].Data) != tok || byName["db.token"].Mode != 0o600 {
		t.Errorf("db.token = %q mode %#o", byName["db.token"].Data, byName["db.token"].Mode)
	}
	jwks := byName["jwt_bundle.example.org.json"]
	if _, err := jwtbundle.Parse(ca.td, jwks.Data); err != nil {
		t.Errorf("per-domain JWKS does not parse: %v", err)
	}
	var index map[string]string
	if err := json.Unmarshal(byName["jwt_bundle.json"].Data, &index); err != nil || index["example.org"] == "" {
		t.Errorf("jwt_bundle.json (spiffe-helper format) = %s, %v", byName["jwt_bundle.json"].Data, err)
	}
}

// The first write into a directory holding spiffe-helper's regular files,
// or links of someone else's (not into ..data), must move the cert and key
// together. Readers read svid.pem, svid_key.pem, then svid.pem again: when
// the cert did not change around the key read, the key read must match it.
// (A read that straddles the one swap sees the cert change and is not
// counted: no layout of two files can stop a reader that opens them at
// different times from straddling an update.)
func TestWriterAdoptsExistingFilesAsOnePair(t *testing.T) {
	ca := newTestCA(t, "example.org")
	for _, tc := range []struct {
		name  string
		place func(t *testing.T, dir string, f File) // puts the old f in dir
	}{
		{"plain files", func(t *testing.T, dir string, f File) {
			if err := os.WriteFile(filepath.Join(dir, f.Name), f.Data, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign links", func(t *testing.T, dir string, f File) {
			ext := filepath.Join(filepath.Dir(dir), "ext-"+f.Name)
			if err := os.WriteFile(ext, f.Data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(ext, filepath.Join(dir, f.Name)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mismatches, pairs atomic.Int64
			for range 150 {
				dir := filepath.Join(t.TempDir(), "certs")
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				cfg := testConfig(dir)
				old, err := cfg.Files(Material{SVID: ca.svid(t, "spiffe://example.org/web", time.Hour), Bundles: x509bundle.NewSet(ca.bundle())}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range old {
					tc.place(t, dir, f)
				}
				var stop atomic.Bool
				done := make(chan struct{})
				go func() {
					defer close(done)
					for !stop.Load() {
						c1, err1 := os.ReadFile(filepath.Join(dir, "svid.pem"))
						k, err2 := os.ReadFile(filepath.Join(dir, "svid_key.pem"))
						c2, err3 := os.ReadFile(filepath.Join(dir, "svid.pem"))
						if err1 != nil || err2 != nil || err3 != nil || !bytes.Equal(c1, c2) {
							continue
						}
						pairs.Add(1)
						if _, err := tls.X509KeyPair(c1, k); err != nil {
							mismatches.Add(1)
						}
					}
				}()
				writeSVIDSet(t, NewWriter(dir, -1, -1), cfg, ca)
				stop.Store(true)
				<-done
				if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem")); err != nil {
					t.Fatalf("after the write: %v", err)
				}
			}
			if mismatches.Load() > 0 {
				t.Fatalf("%d of %d reads paired svid.pem with another svid_key.pem", mismatches.Load(), pairs.Load())
			}
		})
	}
}

// Adopting regular files keeps their mode and owner until the new set,
// with the configured ones, replaces them.
func TestWriterAdoptKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another owner")
	}
	ca := newTestCA(t, "example.org")
	dir := t.TempDir()
	key := filepath.Join(dir, "svid_key.pem")
	if err := os.WriteFile(key, []byte("old key"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(key, 101, 104); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(dir, -1, -1)
	cfg := testConfig(dir)
	files, err := cfg.Files(Material{SVID: ca.svid(t, "spiffe://example.org/web", time.Hour), Bundles: x509bundle.NewSet(ca.bundle())}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.adopt(files); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(key); string(b) != "old key" {
		t.Errorf("adopted key holds %q", b)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o640 || sys.Uid != 101 || sys.Gid != 104 {
		t.Errorf("adopted key: mode %#o uid %d gid %d, want 0640 101 104", st.Mode().Perm(), sys.Uid, sys.Gid)
	}
	if l, err := os.Readlink(key); err != nil || l != filepath.Join(dataLink, "svid_key.pem") {
		t.Errorf("svid_key.pem is not a link into %s: %q %v", dataLink, l, err)
	}
}

// A failure after the ..data swap is a *PostCommitError: the new set is
// live. A name held by a directory fails before anything changes.
func TestWriterErrorsBeforeAndAfterCommit(t *testing.T) {
	ca := newTestCA(t, "example.org")
	t.Run("after", func(t *testing.T) {
		dir := t.TempDir()
		blockLink(t, dir, "bundle.pem")
		files := writeFiles(t, testConfig(dir), ca)
		err := NewWriter(dir, -1, -1).Write(files)
		var late *PostCommitError
		if !errors.As(err, &late) || !strings.Contains(err.Error(), "bundle.pem") {
			t.Fatalf("Write = %v, want a *PostCommitError about bundle.pem", err)
		}
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem")); err != nil {
			t.Errorf("new set not live: %v", err)
		}
	})
	t.Run("before", func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig(dir)
		w := NewWriter(dir, -1, -1)
		writeSVIDSet(t, w, cfg, ca)
		before, _ := os.Readlink(filepath.Join(dir, dataLink))
		if err := os.Remove(filepath.Join(dir, "bundle.pem")); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "bundle.pem", "x"), 0o755); err != nil {
			t.Fatal(err)
		}
		err := w.Write(writeFiles(t, cfg, ca))
		var late *PostCommitError
		if err == nil || errors.As(err, &late) {
			t.Fatalf("Write = %v, want a failure before the commit", err)
		}
		if after, _ := os.Readlink(filepath.Join(dir, dataLink)); after != before {
			t.Errorf("..data moved from %s to %s on a failed write", before, after)
		}
	})
}

func writeFiles(t *testing.T, cfg Config, ca *testCA) []File {
	t.Helper()
	files, err := cfg.Files(Material{SVID: ca.svid(t, "spiffe://example.org/web", time.Hour), Bundles: x509bundle.NewSet(ca.bundle())}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// A restarted helper (a new Writer over the directory) keeps the generation
// ..data named before its first swap, where readers may still be, and
// prunes it on the next write as usual.
func TestNewWriterKeepsGenerationReadersAreIn(t *testing.T) {
	dir := t.TempDir()
	set := func(v string) []File { return []File{{Name: "svid.pem", Data: []byte(v), Mode: 0o644}} }
	current := func() string {
		t.Helper()
		gen, err := os.Readlink(filepath.Join(dir, dataLink))
		if err != nil {
			t.Fatal(err)
		}
		return gen
	}
	if err := NewWriter(dir, -1, -1).Write(set("one")); err != nil {
		t.Fatal(err)
	}
	gen1 := current()
	w := NewWriter(dir, -1, -1) // the helper restarted
	if err := w.Write(set("two")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, gen1, "svid.pem")); err != nil || string(b) != "one" {
		t.Errorf("the generation current before the swap: %q, %v; want it kept", b, err)
	}
	gen2 := current()
	if err := w.Write(set("three")); err != nil {
		t.Fatal(err)
	}
	gens, _ := filepath.Glob(filepath.Join(dir, genPrefix+"*"))
	want := []string{filepath.Join(dir, gen2), filepath.Join(dir, current())}
	slices.Sort(want)
	if !slices.Equal(gens, want) {
		t.Errorf("generations on disk %q, want the current and previous %q", gens, want)
	}
}
