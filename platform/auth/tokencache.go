package auth

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers tokens that verified, so a caller sending the same
// token on every call pays for one signature check per TTL instead of one
// per call (an ES256 verification costs more than the rest of a unary call).
//
// Entries are keyed by the SHA-256 of the raw token: the cache never holds a
// token that could be replayed if the process memory were read. An entry is
// served until the earlier of the token's own expiry and TTL after it was
// verified, checked against the clock on every hit, so an expired token is
// never served, whatever its age in the cache.
//
// The TTL is what bounds a change to the keys: a token verified just before
// its signing key was removed from the JWKS is still accepted from the
// cache for up to TTL after that verification. The removal itself is seen
// only when the keys are read again (a JWKS URL is fetched every Refresh; a
// JWKS file is read at start), so the total delay is that plus the TTL.
//
// The cache is bounded: beyond size entries, the least recently used one
// is dropped. Safe for concurrent use.
type tokenCache struct {
	ttl  time.Duration
	size int
	now  func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]*list.Element
	lru     list.List // of *cacheEntry, most recently used first
}

type cacheEntry struct {
	key [sha256.Size]byte
	id  Identity
	// until is when the entry stops being served: the earlier of the
	// token's exp and its verification + TTL.
	until time.Time
}

func newTokenCache(ttl time.Duration, size int, now func() time.Time) *tokenCache {
	return &tokenCache{ttl: ttl, size: size, now: now, entries: make(map[[sha256.Size]byte]*list.Element)}
}

// get returns the identity a token verified as, if it did so within the TTL
// and has not expired since.
func (c *tokenCache) get(token string) (Identity, bool) {
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return Identity{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.until) {
		c.lru.Remove(el)
		delete(c.entries, key)
		return Identity{}, false
	}
	c.lru.MoveToFront(el)
	return e.id, true
}

// put records that token verified as id and expires at expiry. A token
// that has already expired (it verified within the clock-skew leeway) is
// not stored: it is verified again each time, until that refuses it.
func (c *tokenCache) put(token string, id Identity, expiry time.Time) {
	now := c.now()
	until := now.Add(c.ttl)
	if expiry.Before(until) {
		until = expiry
	}
	if !now.Before(until) {
		return
	}
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*cacheEntry)
		e.id, e.until = id, until
		c.lru.MoveToFront(el)
		return
	}
	c.entries[key] = c.lru.PushFront(&cacheEntry{key: key, id: id, until: until})
	for c.lru.Len() > c.size {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).key)
	}
}

// len returns the number of entries, expired or not.
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
