package certfile

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Reloader holds the certificate of one file pair. Each handshake costs two
// stats; only a change costs a parse.
type Reloader struct {
	certFile, keyFile string
	what              string
	logger            *slog.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded [2]stamp // of the files cert was read from
	failed [2]stamp // of the files that last failed to load, to warn once
}

// stamp tells one version of a file from another: a replaced file has a
// new inode, one rewritten in place a new size or mtime.
type stamp struct {
	ino     uint64
	size    int64
	modTime time.Time
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: fi.Size(), modTime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = sys.Ino
	}
	return s, nil
}

// New loads the pair now, so that a bad pair fails the start. what names
// the certificate in errors and logs ("bundle endpoint certificate").
func New(certFile, keyFile, what string, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, what: what, logger: logger}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// load returns the current certificate, reading the pair again if either
// file changed since. When the new pair cannot be used it returns the
// previous certificate (if any) and the error.
func (r *Reloader) load() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var now [2]stamp
	for i, p := range []string{r.certFile, r.keyFile} {
		s, err := stampOf(p)
		if err != nil {
			return r.cert, fmt.Errorf("%s: %w", r.what, err)
		}
		now[i] = s
	}
	if r.cert != nil && now == r.loaded {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		err = fmt.Errorf("%s %s, key %s: %w", r.what, r.certFile, r.keyFile, err)
		if r.cert != nil && now != r.failed {
			r.failed = now
			r.logger.Warn("cannot load the changed certificate files; serving the previous certificate", "certificate", r.what, "error", err)
		}
		return r.cert, err
	}
	if r.cert != nil {
		r.logger.Info("certificate reloaded", "certificate", r.what, "cert_file", r.certFile, "not_after", cert.Leaf.NotAfter)
	}
	r.cert, r.loaded = &cert, now
	return r.cert, nil
}

// GetCertificate is tls.Config.GetCertificate: the newest loadable pair.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := r.load()
	if cert != nil {
		return cert, nil // the previous pair, while a new one is unreadable
	}
	return nil, err
}
