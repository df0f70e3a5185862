package manager

import (
	"crypto/x509"
	"hash/fnv"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/client"
)

// RotateAt is when an SVID is renewed: half its lifetime plus a jitter of
// up to a tenth of it, so SVIDs signed together do not all rotate in the
// same instant. The jitter derives from the serial number, so the decision
// is stable across reconciliations and restarts.
func RotateAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	h := fnv.New64a()
	if leaf.SerialNumber != nil {
		h.Write(leaf.SerialNumber.Bytes())
	}
	frac := float64(h.Sum64()%1_000_000) / 1_000_000
	jitter := time.Duration(frac * float64(life/10))
	return leaf.NotBefore.Add(life/2 + jitter)
}

// reason says why an entry needs a new SVID; none means it does not.
type reason string

const (
	none          reason = ""
	reasonNew     reason = "new"
	reasonExpired reason = "expired"
	reasonRotate  reason = "rotation" // half lifetime (plus jitter) passed
	reasonID      reason = "spiffe_id_changed"
	reasonDNS     reason = "dns_names_changed"
	reasonTTL     reason = "x509_ttl_shortened" // the SVID outlives the entry's new TTL
	reasonIssuer  reason = "issuer_untrusted"   // CA no longer in the bundle
	reasonTainted reason = "authority_tainted"  // issued under a tainted root
)

// trustedIssuers identifies the bundle's X.509 authorities by subject key
// ID (and by subject for CAs without one).
type trustedIssuers struct {
	keyIDs   map[string]bool
	subjects map[string]bool
}

func issuersOf(b *spiffebundle.Bundle) *trustedIssuers {
	if b == nil || len(b.X509Authorities()) == 0 {
		return nil // unknown yet: do not re-sign for this reason
	}
	t := &trustedIssuers{keyIDs: map[string]bool{}, subjects: map[string]bool{}}
	for _, c := range b.X509Authorities() {
		if len(c.SubjectKeyId) > 0 {
			t.keyIDs[string(c.SubjectKeyId)] = true
		}
		t.subjects[string(c.RawSubject)] = true
	}
	return t
}

// trusts reports whether the top of chain was issued by a bundle authority.
func (t *trustedIssuers) trusts(chain []*x509.Certificate) bool {
	if t == nil {
		return true
	}
	top := chain[len(chain)-1]
	if len(top.AuthorityKeyId) > 0 {
		return t.keyIDs[string(top.AuthorityKeyId)]
	}
	return t.subjects[string(top.RawIssuer)]
}

// due decides whether e needs a new SVID at now. An SVID issued under a
// tainted root is re-signed at once; its successor, signed by the active
// CA, is not tainted.
func due(e *cache.Entry, svid *x509svid.SVID, trusted *trustedIssuers, taint client.Taint, now time.Time) reason {
	if svid == nil || len(svid.Certificates) == 0 {
		return reasonNew
	}
	leaf := svid.Certificates[0]
	switch {
	case !now.Before(leaf.NotAfter):
		return reasonExpired
	case svid.ID != e.SPIFFEID:
		return reasonID
	case !sameNames(leaf.DNSNames, e.DNSNames):
		return reasonDNS
	case outlivesTTL(leaf, e.X509TTL):
		return reasonTTL
	case !trusted.trusts(svid.Certificates):
		return reasonIssuer
	case taint.IssuerOf(svid.Certificates) != nil:
		return reasonTainted
	case !now.Before(RotateAt(leaf)):
		return reasonRotate
	}
	return none
}

// outlivesTTL reports whether leaf lives longer than an SVID signed with ttl
// would (0: the server's default, unknown here). The server backdates by a
// tenth of the TTL, at most 10 s, and rounds NotAfter up to a second; a
// lengthened TTL waits for the next rotation.
func outlivesTTL(leaf *x509.Certificate, ttl time.Duration) bool {
	if ttl <= 0 {
		return false
	}
	slack := min(10*time.Second, ttl/10) + time.Second
	return leaf.NotAfter.Sub(leaf.NotBefore) > ttl+slack
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
