package cache

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

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
}

type jwtKey struct {
	entryID  string
	audience string // sorted audiences joined by NUL
}

type jwtToken struct {
	svid      *jwtsvid.SVID
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
	// Half of the remaining lifetime as seen from here: the token was
	// minted just now, so this is half its lifetime, free of clock skew.
	refresh := t.Add(svid.Expiry.Sub(t) / 2)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.gen != gen {
		return svid, nil // an entry changed meanwhile; serve, but do not cache
	}
	j.tokens[key] = jwtToken{svid: svid, refreshAt: refresh}
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
