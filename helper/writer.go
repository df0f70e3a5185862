package helper

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// File is one member of a file set.
type File struct {
	Name string // plain name inside the cert dir
	Data []byte
	Mode fs.FileMode
}

// The on-disk layout (the same trick as Kubernetes' projected volumes):
//
//	certdir/.signet-XXXX/svid.pem   one directory per generation, never modified
//	certdir/..data -> .signet-XXXX  swapped with one rename(2): the commit point
//	certdir/svid.pem -> ..data/svid.pem
//
// Applications open certdir/svid.pem as before. Each rename is atomic, so a
// reader sees either the whole old set or the whole new set; a reader that
// resolves ..data once (or reloads after we signal it, which is after the
// swap) never pairs a new cert with an old key.
const (
	dataLink  = "..data"
	genPrefix = ".signet-"
)

// Writer writes file sets atomically into one directory. It is not safe for
// concurrent use.
type Writer struct {
	dir      string
	uid, gid int
}

// NewWriter returns a Writer for dir, owning files by uid/gid (-1: unchanged).
func NewWriter(dir string, uid, gid int) *Writer {
	return &Writer{dir: dir, uid: uid, gid: gid}
}

// Dir is the cert directory.
func (w *Writer) Dir() string { return w.dir }

// PostCommitError is returned by [Writer.Write] for a problem after the
// commit point: the new set is published (..data names it), but a later step
// failed, such as linking a name to it or syncing the directory.
type PostCommitError struct {
	Err error
	// Missing names the files that readers cannot open under their name
	// (a new name whose link could not be placed): the set is incomplete.
	Missing []string
}

func (e *PostCommitError) Error() string { return "new set published, then: " + e.Err.Error() }

func (e *PostCommitError) Unwrap() error { return e.Err }

// Write publishes files as the new set. On an error other than a
// *PostCommitError the previous set stays in place, as it was.
func (w *Writer) Write(files []File) error {
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return fmt.Errorf("create cert dir: %w", err)
	}
	if err := w.adopt(files); err != nil {
		return err
	}
	// The generation readers may be in now; read from disk, not
	// remembered, so a restarted helper keeps it too.
	prev, _ := os.Readlink(filepath.Join(w.dir, dataLink))
	gen, err := os.MkdirTemp(w.dir, genPrefix)
	if err != nil {
		return fmt.Errorf("create file set dir: %w", err)
	}
	if err := w.fill(gen, files); err != nil {
		_ = os.RemoveAll(gen)
		return err
	}
	if err := w.swap(gen); err != nil {
		_ = os.RemoveAll(gen)
		return err
	}
	var errs []error
	var missing []string
	// The per-file links are stable; they only need creating once, for a
	// name new to this directory.
	for _, f := range files {
		if err := w.ensureLink(f.Name); err != nil {
			errs = append(errs, err)
			missing = append(missing, f.Name)
		}
	}
	if err := syncDir(w.dir); err != nil {
		errs = append(errs, err)
	}
	w.prune(filepath.Base(gen), filepath.Base(prev))
	if len(errs) > 0 {
		return &PostCommitError{Err: errors.Join(errs...), Missing: missing}
	}
	return nil
}

// swap points ..data at gen in one rename: the commit point.
func (w *Writer) swap(gen string) error {
	tmpLink := filepath.Join(w.dir, dataLink+".tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(gen), tmpLink); err != nil {
		return fmt.Errorf("create data link: %w", err)
	}
	if err := os.Rename(tmpLink, filepath.Join(w.dir, dataLink)); err != nil {
		_ = os.Remove(tmpLink)
		return fmt.Errorf("swap data link: %w", err)
	}
	return nil
}

// adopt prepares a directory where some of the set's names are regular
// files (spiffe-helper's layout), or links not into ..data, for the swap. Replacing them by links one
// rename at a time would, between two renames, pair the new certificate
// with the old key. Instead the current contents are published first, as a
// generation of their own, and each name is linked to it, a rename that
// leaves what readers get unchanged; the swap that follows then changes
// every file at once. A name held by anything else (a directory) is an
// error here, before anything changed.
func (w *Writer) adopt(files []File) error {
	plain := false
	for _, f := range files {
		st, err := os.Lstat(filepath.Join(w.dir, f.Name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("inspect %s: %w", f.Name, err)
		case st.Mode().IsRegular():
			plain = true
		case st.Mode()&fs.ModeSymlink == 0:
			return fmt.Errorf("%s in %s is not a file or a link (mode %s)", f.Name, w.dir, st.Mode().Type())
		default:
			// A link of someone else's (made by hand, or another tool)
			// would be replaced one rename at a time too.
			if target, err := os.Readlink(filepath.Join(w.dir, f.Name)); err == nil && target != filepath.Join(dataLink, f.Name) {
				plain = true
			}
		}
	}
	if !plain {
		return nil
	}
	gen, err := os.MkdirTemp(w.dir, genPrefix)
	if err != nil {
		return fmt.Errorf("create file set dir: %w", err)
	}
	var have []string
	err = os.Chmod(gen, 0o755)
	for _, f := range files {
		if err != nil {
			break
		}
		var ok bool
		if ok, err = copyCurrent(filepath.Join(w.dir, f.Name), filepath.Join(gen, f.Name)); ok {
			have = append(have, f.Name)
		}
	}
	if err == nil {
		err = syncDir(gen)
	}
	if err == nil {
		err = w.swap(gen)
	}
	if err != nil {
		_ = os.RemoveAll(gen)
		return fmt.Errorf("adopt the files in %s: %w", w.dir, err)
	}
	for _, name := range have {
		if err := w.ensureLink(name); err != nil {
			return fmt.Errorf("adopt the files in %s: %w", w.dir, err)
		}
	}
	return nil
}

// copyCurrent copies what src holds now (following links) to dst with its
// mode and, where permitted, its owner; false when src does not resolve.
func copyCurrent(src, dst string) (bool, error) {
	in, err := os.Open(src)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", filepath.Base(src), err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return false, fmt.Errorf("read %s: %w", filepath.Base(src), err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return false, fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && err == nil {
		// A key owned by its app (PostgreSQL's) must stay so; without
		// the right to chown, the copy is ours, as the next set will be.
		if cerr := out.Chown(int(sys.Uid), int(sys.Gid)); cerr != nil && !errors.Is(cerr, fs.ErrPermission) {
			err = cerr
		}
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	return true, nil
}

func (w *Writer) fill(gen string, files []File) error {
	if err := os.Chmod(gen, 0o755); err != nil {
		return fmt.Errorf("chmod file set dir: %w", err)
	}
	if err := w.chown(gen); err != nil {
		return err
	}
	for _, f := range files {
		if err := w.writeFile(filepath.Join(gen, f.Name), f); err != nil {
			return err
		}
	}
	return syncDir(gen)
}

func (w *Writer) writeFile(path string, f File) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.Mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", f.Name, err)
	}
	_, werr := fh.Write(f.Data)
	// Chmod after create: the umask must not loosen or tighten the mode.
	if werr == nil {
		werr = fh.Chmod(f.Mode)
	}
	if werr == nil && (w.uid >= 0 || w.gid >= 0) {
		werr = fh.Chown(w.uid, w.gid)
	}
	if werr == nil {
		werr = fh.Sync()
	}
	if cerr := fh.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("write %s: %w", f.Name, werr)
	}
	return nil
}

func (w *Writer) chown(path string) error {
	if w.uid < 0 && w.gid < 0 {
		return nil
	}
	if err := os.Chown(path, w.uid, w.gid); err != nil {
		return fmt.Errorf("chown %s: %w", filepath.Base(path), err)
	}
	return nil
}

func (w *Writer) ensureLink(name string) error {
	path := filepath.Join(w.dir, name)
	target := filepath.Join(dataLink, name)
	if cur, err := os.Readlink(path); err == nil && cur == target {
		return nil
	}
	tmp := filepath.Join(w.dir, "."+name+".link")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("link %s: %w", name, err)
	}
	return nil
}

// prune removes generations other than the current one and prev, the one
// ..data named before the swap; keeping it lets a reader that resolved
// ..data just before the swap finish reading.
func (w *Writer) prune(current, prev string) {
	entries, err := os.ReadDir(w.dir)
	if err == nil {
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() && strings.HasPrefix(n, genPrefix) && n != current && n != prev {
				_ = os.RemoveAll(filepath.Join(w.dir, n))
			}
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Material is what one file set is made of.
type Material struct {
	SVID       *x509svid.SVID
	Bundles    *x509bundle.Set
	JWTSVIDs   map[string]*jwtsvid.SVID // by file name
	JWTBundles *jwtbundle.Set
}

// Files renders m as the file set cfg asks for.
func (c *Config) Files(m Material, now time.Time) ([]File, error) {
	var files []File
	if c.writesX509() {
		var err error
		if files, err = c.x509Files(m, now); err != nil {
			return nil, err
		}
	}
	for _, j := range c.JWTSVIDs {
		s, ok := m.JWTSVIDs[j.FileName]
		if !ok {
			return nil, fmt.Errorf("no JWT-SVID for audience %q", j.Audience)
		}
		files = append(files, File{Name: j.FileName, Data: []byte(s.Marshal()), Mode: c.JWTSVIDFileMode})
	}
	if c.JWTBundleFileName != "" && m.JWTBundles != nil {
		jf, err := c.jwtBundleFiles(m.JWTBundles)
		if err != nil {
			return nil, err
		}
		files = append(files, jf...)
	}
	return files, nil
}

// x509Files renders the SVID, key and bundle files.
func (c *Config) x509Files(m Material, now time.Time) ([]File, error) {
	if m.SVID == nil || len(m.SVID.Certificates) == 0 {
		return nil, errors.New("no X509-SVID")
	}
	td := m.SVID.ID.TrustDomain()
	own, ok := m.Bundles.Get(td)
	if !ok {
		return nil, fmt.Errorf("no X.509 bundle for trust domain %q", td)
	}
	keep := func(certs []*x509.Certificate) []*x509.Certificate {
		if !c.OmitExpired {
			return certs
		}
		return slices.DeleteFunc(slices.Clone(certs), func(c *x509.Certificate) bool { return now.After(c.NotAfter) })
	}
	chain := m.SVID.Certificates
	bundle := keep(own.X509Authorities())
	if c.AddIntermediatesToBundle {
		bundle = append(bundle, keep(chain[1:])...)
		chain = chain[:1]
	} else {
		chain = append(chain[:1:1], keep(chain[1:])...)
	}
	if c.IncludeFederatedDomains {
		for _, b := range m.Bundles.Bundles() {
			if b.TrustDomain() != td {
				bundle = append(bundle, keep(b.X509Authorities())...)
			}
		}
	}
	key, err := x509.MarshalPKCS8PrivateKey(m.SVID.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("marshal SVID key: %w", err)
	}
	return []File{
		{Name: c.SVIDFileName, Data: pemCerts(chain), Mode: c.CertFileMode},
		{Name: c.SVIDKeyFileName, Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), Mode: c.KeyFileMode},
		{Name: c.SVIDBundleFileName, Data: pemCerts(bundle), Mode: c.CertFileMode},
	}, nil
}

// jwtBundleFiles writes jwt_bundle_file_name exactly as spiffe-helper does
// (a JSON object: trust domain -> base64 of its JWKS), so consumers written
// for it keep working, and beside it one standard JWKS document per trust
// domain, named <stem>.<trust domain><ext> (e.g. jwt_bundle.example.org.json).
func (c *Config) jwtBundleFiles(set *jwtbundle.Set) ([]File, error) {
	ext := filepath.Ext(c.JWTBundleFileName)
	stem := strings.TrimSuffix(c.JWTBundleFileName, ext)
	if ext == "" {
		ext = ".json"
	}
	index := map[string]string{}
	var files []File
	for _, b := range set.Bundles() {
		doc, err := b.Marshal()
		if err != nil {
			return nil, fmt.Errorf("marshal JWT bundle %q: %w", b.TrustDomain(), err)
		}
		index[b.TrustDomain().Name()] = base64.StdEncoding.EncodeToString(doc)
		files = append(files, File{Name: stem + "." + b.TrustDomain().Name() + ext, Data: doc, Mode: c.JWTBundleFileMode})
	}
	idx, err := json.Marshal(index)
	if err != nil {
		return nil, fmt.Errorf("marshal JWT bundles: %w", err)
	}
	return append([]File{{Name: c.JWTBundleFileName, Data: idx, Mode: c.JWTBundleFileMode}}, files...), nil
}

func pemCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
