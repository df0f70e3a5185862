package oidcdiscovery

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// servingCert is the HTTPS certificate, read again when its files change (a
// renewal by cert-manager or certbot, a Secret's atomic swap). Every
// handshake stats the two files; only a change costs a parse.
type servingCert struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded [2]fileID // of the files cert came from
	failed [2]fileID // of the files that last failed to load, to warn once
}

// fileID tells one version of a file from another: a replaced file has a
// new inode, one rewritten in place a new size or mtime.
type fileID struct {
	ino     uint64
	size    int64
	modTime time.Time
}

func idOf(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: fi.Size(), modTime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id, nil
}

// load returns the current certificate, reading the pair again if either
// file changed since. When the new pair cannot be used it keeps the
// previous certificate (if any) and returns the error too.
func (c *servingCert) load() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var now [2]fileID
	for i, p := range []string{c.certFile, c.keyFile} {
		id, err := idOf(p)
		if err != nil {
			return c.cert, fmt.Errorf("serving certificate: %w", err)
		}
		now[i] = id
	}
	if c.cert != nil && now == c.loaded {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		err = fmt.Errorf("serving certificate %s, key %s: %w", c.certFile, c.keyFile, err)
		if c.cert != nil && now != c.failed {
			c.failed = now
			c.logger.Warn("cannot load the changed serving certificate; serving the previous one", "error", err)
		}
		return c.cert, err
	}
	if c.cert != nil {
		c.logger.Info("serving certificate reloaded", "cert_file", c.certFile, "not_after", cert.Leaf.NotAfter)
	}
	c.cert, c.loaded = &cert, now
	return c.cert, nil
}

// get is tls.Config.GetCertificate.
func (c *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := c.load()
	if cert != nil {
		return cert, nil // the previous pair, while a new one is unreadable
	}
	return nil, err
}
