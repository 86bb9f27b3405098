package auth

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/devpki"
)

func TestTokenCache(t *testing.T) {
	// A step stores a token (put, with exp relative to the start), looks
	// one up (get, expecting a hit or a miss), or moves the clock.
	type step struct {
		op      string // "put", "get", "wait"
		token   string
		subject string
		exp     time.Duration
		wait    time.Duration
		hit     bool
	}
	tests := []struct {
		name    string
		ttl     time.Duration
		size    int
		steps   []step
		wantLen int
	}{
		{name: "hit", ttl: time.Minute, size: 10, wantLen: 1, steps: []step{
			{op: "put", token: "A", subject: "alice", exp: time.Hour},
			{op: "wait", wait: 30 * time.Second},
			{op: "get", token: "A", subject: "alice", hit: true},
		}},
		{name: "token exp comes before the TTL", ttl: time.Minute, size: 10, wantLen: 0, steps: []step{
			{op: "put", token: "A", subject: "alice", exp: 20 * time.Second},
			{op: "wait", wait: 19 * time.Second},
			{op: "get", token: "A", subject: "alice", hit: true},
			{op: "wait", wait: time.Second},
			{op: "get", token: "A", hit: false},
		}},
		{name: "TTL comes before the token exp", ttl: time.Minute, size: 10, wantLen: 0, steps: []step{
			{op: "put", token: "A", subject: "alice", exp: time.Hour},
			{op: "wait", wait: 59 * time.Second},
			{op: "get", token: "A", subject: "alice", hit: true},
			{op: "wait", wait: time.Second},
			{op: "get", token: "A", hit: false},
		}},
		{name: "hits do not extend the TTL", ttl: time.Minute, size: 10, wantLen: 0, steps: []step{
			{op: "put", token: "A", subject: "alice", exp: time.Hour},
			{op: "wait", wait: 40 * time.Second},
			{op: "get", token: "A", subject: "alice", hit: true},
			{op: "wait", wait: 40 * time.Second},
			{op: "get", token: "A", hit: false},
		}},
		{name: "an expired token is not stored", ttl: time.Minute, size: 10, wantLen: 0, steps: []step{
			{op: "put", token: "A", subject: "alice", exp: -time.Second},
			{op: "get", token: "A", hit: false},
		}},
		{name: "bounded: the least recently used goes", ttl: time.Minute, size: 2, wantLen: 2, steps: []step{
			{op: "put", token: "A", subject: "alice", exp: time.Hour},
			{op: "put", token: "B", subject: "bob", exp: time.Hour},
			{op: "get", token: "A", subject: "alice", hit: true},
			{op: "put", token: "C", subject: "carol", exp: time.Hour},
			{op: "get", token: "B", hit: false},
			{op: "get", token: "A", subject: "alice", hit: true},
			{op: "get", token: "C", subject: "carol", hit: true},
		}},
		{name: "a different token with the same subject is not a hit", ttl: time.Minute, size: 10, wantLen: 1, steps: []step{
			{op: "put", token: "A", subject: "alice", exp: time.Hour},
			{op: "get", token: "A2", hit: false},
			{op: "get", token: "A", subject: "alice", hit: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			now := start
			c := newTokenCache(tt.ttl, tt.size, func() time.Time { return now })
			for i, s := range tt.steps {
				switch s.op {
				case "put":
					c.put(s.token, Identity{Subject: s.subject, Method: MethodJWT}, start.Add(s.exp))
				case "wait":
					now = now.Add(s.wait)
				case "get":
					id, ok := c.get(s.token)
					require.Equal(t, s.hit, ok, "step %d: get %s", i, s.token)
					assert.Equal(t, s.subject, id.Subject, "step %d", i)
				}
			}
			assert.Equal(t, tt.wantLen, c.len())
		})
	}
}

func TestTokenCacheKeysByHash(t *testing.T) {
	c := newTokenCache(time.Minute, 10, time.Now)
	c.put("secret-token", Identity{Subject: "alice"}, time.Now().Add(time.Hour))
	for el := c.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*cacheEntry)
		assert.NotContains(t, string(e.key[:]), "secret-token")
	}
}

// TestVerifierCacheBoundsKeyRemoval shows what the TTL bounds: once the
// key that signed a token is gone, the token is still accepted from the
// cache until the TTL runs out, and not after.
func TestVerifierCacheBoundsKeyRemoval(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	now := time.Now()
	v, err := NewTokenVerifier(context.Background(), TokenConfig{
		JWKSFile: p.JWKSFile(), Issuer: devpki.Issuer, Audience: devpki.Audience,
		CacheTTL: time.Minute, Now: func() time.Time { return now },
	})
	require.NoError(t, err)
	tok, err := p.Token("alice", []string{"viewer"}, time.Hour)
	require.NoError(t, err)
	id, err := v.Verify(context.Background(), tok)
	require.NoError(t, err)
	require.Equal(t, "alice", id.Subject)

	// The signing key is replaced by one that does not verify the token.
	fresh, err := NewTokenVerifier(context.Background(), TokenConfig{JWKSFile: other.JWKSFile(), Issuer: devpki.Issuer, Audience: devpki.Audience})
	require.NoError(t, err)
	v.mu.Lock()
	v.keys = fresh.keys
	v.mu.Unlock()

	now = now.Add(59 * time.Second)
	id, err = v.Verify(context.Background(), tok)
	require.NoError(t, err, "still within the TTL")
	require.Equal(t, "alice", id.Subject)
	now = now.Add(time.Second)
	_, err = v.Verify(context.Background(), tok)
	require.ErrorContains(t, err, "does not verify")

	// A refused token is never cached: the entry that ran out is gone and
	// no other took its place.
	require.Zero(t, v.cache.len())
	now = now.Add(time.Second)
	_, err = v.Verify(context.Background(), tok)
	require.Error(t, err)
	require.Zero(t, v.cache.len())
}

func TestVerifierCacheServesNoExpiredToken(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	v, err := NewTokenVerifier(context.Background(), TokenConfig{
		JWKSFile: p.JWKSFile(), Issuer: devpki.Issuer, Audience: devpki.Audience,
		CacheTTL: time.Hour, Now: func() time.Time { return now },
	})
	require.NoError(t, err)
	tok, err := p.Token("alice", nil, 2*time.Minute)
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), tok)
	require.NoError(t, err)
	now = now.Add(2*time.Minute + leeway + time.Second)
	_, err = v.Verify(context.Background(), tok)
	require.ErrorContains(t, err, "expired")
}
