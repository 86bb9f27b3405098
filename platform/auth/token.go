package auth

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/spoolhq/spool/platform/positive"
)

// Only asymmetric algorithms are accepted. Listing them is what stops a
// token signed "none", or signed HMAC with a public key as the secret, from
// being taken as valid: go-jose refuses any algorithm not in this list
// before it looks at a key.
var allowedAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.RS256}

// leeway is the clock skew tolerated on exp, nbf and iat.
const leeway = 30 * time.Second

// TokenConfig says where a verifier's keys come from and what a token must
// claim.
type TokenConfig struct {
	// JWKSFile or JWKSURL (one of them) holds the public keys.
	JWKSFile string
	JWKSURL  string
	// Issuer and Audience must match a token's iss and aud.
	Issuer   string
	Audience string
	// Refresh is how often keys from a URL are fetched again; a token
	// naming an unknown key id fetches them sooner, at most once per
	// MinRefresh. Zero means 10 minutes and 30 seconds.
	Refresh, MinRefresh time.Duration
	// HTTPClient fetches the JWKS URL; nil means a client with a 10 s
	// timeout.
	HTTPClient *http.Client
	// CacheTTL is how long a verified token is accepted again without
	// checking its signature (never past its exp); zero turns the cache
	// off. CacheSize bounds the number of tokens remembered; zero means
	// 10 000.
	CacheTTL  time.Duration
	CacheSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// TokenVerifier checks bearer tokens: signature (ES256 or RS256, key from
// the JWKS), issuer, audience and expiry.
type TokenVerifier struct {
	cfg TokenConfig

	// cache is nil when CacheTTL is zero.
	cache *tokenCache

	mu      sync.Mutex
	keys    jose.JSONWebKeySet
	fetched time.Time
}

// NewTokenVerifier loads the keys once, so a wrong file or an unreachable
// URL stops the service at start rather than at the first call.
func NewTokenVerifier(ctx context.Context, cfg TokenConfig) (*TokenVerifier, error) {
	switch {
	case (cfg.JWKSFile == "") == (cfg.JWKSURL == ""):
		return nil, errors.New("token verification needs exactly one of a JWKS file or a JWKS URL")
	case cfg.Issuer == "" || cfg.Audience == "":
		return nil, errors.New("token verification needs an issuer and an audience")
	case cfg.CacheTTL < 0 || cfg.CacheSize < 0:
		return nil, errors.New("token cache TTL and size cannot be negative")
	}
	cfg.CacheSize = positive.Or(cfg.CacheSize, 10_000)
	cfg.Refresh = positive.Or(cfg.Refresh, 10*time.Minute)
	cfg.MinRefresh = positive.Or(cfg.MinRefresh, 30*time.Second)
	cfg.HTTPClient = cmp.Or(cfg.HTTPClient, &http.Client{Timeout: 10 * time.Second})
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &TokenVerifier{cfg: cfg}
	if cfg.CacheTTL > 0 {
		v.cache = newTokenCache(cfg.CacheTTL, cfg.CacheSize, cfg.Now)
	}
	keys, err := v.load(ctx)
	if err != nil {
		return nil, err
	}
	v.keys, v.fetched = keys, cfg.Now()
	return v, nil
}

func (v *TokenVerifier) load(ctx context.Context) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	var b []byte
	if v.cfg.JWKSFile != "" {
		var err error
		if b, err = os.ReadFile(v.cfg.JWKSFile); err != nil {
			return set, fmt.Errorf("read jwks: %w", err)
		}
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
		if err != nil {
			return set, fmt.Errorf("fetch jwks: %w", err)
		}
		resp, err := v.cfg.HTTPClient.Do(req)
		if err != nil {
			return set, fmt.Errorf("fetch jwks: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return set, fmt.Errorf("fetch jwks %s: status %s", v.cfg.JWKSURL, resp.Status)
		}
		if b, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
			return set, fmt.Errorf("fetch jwks: %w", err)
		}
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return set, fmt.Errorf("decode jwks: %w", err)
	}
	if len(set.Keys) == 0 {
		return set, errors.New("jwks holds no keys")
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return set, fmt.Errorf("jwks key %q is not a public key", k.KeyID)
		}
	}
	return set, nil
}

// key returns the keys a token's key id names, refreshing keys from a URL
// when they are old or the id is unknown. A failed refresh keeps the keys
// it had: an identity provider's outage does not lock everyone out.
func (v *TokenVerifier) key(ctx context.Context, kid string) []jose.JSONWebKey {
	v.mu.Lock()
	defer v.mu.Unlock()
	keys := named(v.keys, kid)
	if v.cfg.JWKSURL == "" {
		return keys
	}
	age := v.cfg.Now().Sub(v.fetched)
	if age >= v.cfg.Refresh || (len(keys) == 0 && age >= v.cfg.MinRefresh) {
		if set, err := v.load(ctx); err == nil {
			v.keys = set
			keys = named(v.keys, kid)
		}
		v.fetched = v.cfg.Now()
	}
	return keys
}

// named returns the keys of set that kid names; a token without a key id
// is tried against every key.
func named(set jose.JSONWebKeySet, kid string) []jose.JSONWebKey {
	if kid == "" {
		return set.Keys
	}
	return set.Key(kid)
}

// Verify checks token and returns who it names and its claims. Its errors
// say what was wrong without repeating the token. A token that verified
// within the cache TTL and has not expired is taken from the cache; its
// Claims are shared between callers and must not be changed.
func (v *TokenVerifier) Verify(ctx context.Context, token string) (Identity, error) {
	if v.cache == nil {
		id, _, err := v.verify(ctx, token)
		return id, err
	}
	if id, ok := v.cache.get(token); ok {
		return id, nil
	}
	id, expiry, err := v.verify(ctx, token)
	if err != nil {
		return Identity{}, err
	}
	v.cache.put(token, id, expiry)
	return id, nil
}

// verify checks token's signature and claims, and returns its expiry too.
func (v *TokenVerifier) verify(ctx context.Context, token string) (Identity, time.Time, error) {
	parsed, err := jwt.ParseSigned(token, allowedAlgorithms)
	if err != nil {
		return Identity{}, time.Time{}, fmt.Errorf("malformed or unsupported token: %w", err)
	}
	if len(parsed.Headers) != 1 {
		return Identity{}, time.Time{}, errors.New("token must carry one signature")
	}
	var std jwt.Claims
	var all map[string]any
	verified := false
	for _, k := range v.key(ctx, parsed.Headers[0].KeyID) {
		if parsed.Claims(k.Key, &std, &all) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Identity{}, time.Time{}, errors.New("token signature does not verify against any known key")
	}
	if std.Expiry == nil {
		return Identity{}, time.Time{}, errors.New("token has no expiry")
	}
	if std.Subject == "" {
		return Identity{}, time.Time{}, errors.New("token has no subject")
	}
	err = std.ValidateWithLeeway(jwt.Expected{
		Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: v.cfg.Now(),
	}, leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return Identity{}, time.Time{}, errors.New("token expired")
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return Identity{}, time.Time{}, errors.New("token issuer not accepted")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return Identity{}, time.Time{}, errors.New("token audience not accepted")
	case err != nil:
		return Identity{}, time.Time{}, fmt.Errorf("token not valid: %w", err)
	}
	return Identity{Subject: std.Subject, Method: MethodJWT, Claims: all}, std.Expiry.Time(), nil
}
