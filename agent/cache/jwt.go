package cache

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// jwtCache keeps minted JWT-SVIDs per (entry, sorted audiences) until half
// their lifetime has passed.
type jwtCache struct {
	mu      sync.Mutex
	tokens  map[jwtKey]jwtToken
	sweepAt int // prune expired tokens when the map grows past this
	// gen counts dropEntry calls: a token minted while an entry was being
	// dropped may carry the entry's old identity, so it is not kept.
	gen uint64
	// tainted holds the key IDs of tainted JWT keys: tokens they signed
	// are neither kept nor served again.
	tainted map[string]bool
}

type jwtKey struct {
	entryID  string
	audience string // sorted audiences joined by NUL
}

type jwtToken struct {
	svid      *jwtsvid.SVID
	kid       string // of the key that signed it
	refreshAt time.Time
}

func newJWTCache() *jwtCache {
	return &jwtCache{tokens: make(map[jwtKey]jwtToken), sweepAt: 64}
}

func (j *jwtCache) get(ctx context.Context, entryID string, audience []string, now func() time.Time, mint JWTMinter) (*jwtsvid.SVID, error) {
	aud := slices.Clone(audience)
	slices.Sort(aud)
	aud = slices.Compact(aud)
	key := jwtKey{entryID: entryID, audience: strings.Join(aud, "\x00")}
	j.mu.Lock()
	tok, ok := j.tokens[key]
	gen := j.gen
	j.mu.Unlock()
	t := now()
	if ok && t.Before(tok.refreshAt) {
		return tok.svid, nil
	}
	svid, err := mint(ctx, entryID, aud)
	if err != nil {
		return nil, err
	}
	kid := keyID(svid)
	// Half of the remaining lifetime as seen from here: the token was
	// minted just now, so this is half its lifetime, free of clock skew.
	refresh := t.Add(svid.Expiry.Sub(t) / 2)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.gen != gen {
		return svid, nil // an entry changed meanwhile; serve, but do not cache
	}
	if j.tainted[kid] {
		return svid, nil // the server still signs with a tainted key: do not keep it
	}
	j.tokens[key] = jwtToken{svid: svid, kid: kid, refreshAt: refresh}
	if len(j.tokens) > j.sweepAt {
		for k, v := range j.tokens {
			if !t.Before(v.svid.Expiry) {
				delete(j.tokens, k)
			}
		}
		j.sweepAt = max(64, 2*len(j.tokens))
	}
	return svid, nil
}

// dropEntry forgets the tokens of an entry that changed or that the agent
// no longer serves: they carry the entry as it was (its old SPIFFE ID, TTL).
func (j *jwtCache) dropEntry(entryID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.gen++
	for k := range j.tokens {
		if k.entryID == entryID {
			delete(j.tokens, k)
		}
	}
}

// setTainted replaces the tainted key IDs and drops the tokens they signed,
// returning how many.
func (j *jwtCache) setTainted(keyIDs []string) int {
	tainted := make(map[string]bool, len(keyIDs))
	for _, k := range keyIDs {
		if k != "" { // "" is a token whose kid could not be read
			tainted[k] = true
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.tainted = tainted
	dropped := 0
	for k, v := range j.tokens {
		if tainted[v.kid] {
			delete(j.tokens, k)
			dropped++
		}
	}
	return dropped
}

// jwtAlgorithms are those go-spiffe accepts in a JWT-SVID.
var jwtAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
}

// keyID is the kid in the header of svid's token. The minter parsed the
// token with go-spiffe, so it reads; one that does not (or has no kid)
// yields "", which no tainted key matches.
func keyID(svid *jwtsvid.SVID) string {
	tok, err := jwt.ParseSigned(svid.Marshal(), jwtAlgorithms)
	if err != nil || len(tok.Headers) == 0 {
		return ""
	}
	return tok.Headers[0].KeyID
}
