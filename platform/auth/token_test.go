package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/devpki"
)

func newPKI(t *testing.T) *devpki.PKI {
	t.Helper()
	p, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	return p
}

func fileVerifier(t *testing.T, p *devpki.PKI) *TokenVerifier {
	t.Helper()
	v, err := NewTokenVerifier(context.Background(), TokenConfig{JWKSFile: p.JWKSFile(), Issuer: devpki.Issuer, Audience: devpki.Audience})
	require.NoError(t, err)
	return v
}

// unsigned builds a token with alg "none".
func unsigned(claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

// hmacWithPublicKey signs claims HS256 using the JWKS's public key bytes
// as the secret: the classic algorithm-confusion attack.
func hmacWithPublicKey(t *testing.T, p *devpki.PKI, claims map[string]any) string {
	t.Helper()
	b, err := os.ReadFile(p.JWKSFile())
	require.NoError(t, err)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: b}, nil)
	require.NoError(t, err)
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	require.NoError(t, err)
	return tok
}

func TestVerify(t *testing.T) {
	p := newPKI(t)
	v := fileVerifier(t, p)
	now := time.Now()
	good := map[string]any{"iss": devpki.Issuer, "aud": devpki.Audience, "sub": "alice", "exp": now.Add(time.Hour).Unix(), "roles": []string{"viewer"}}
	with := func(k string, val any) map[string]any {
		c := map[string]any{}
		for key, x := range good {
			c[key] = x
		}
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	sign := func(c map[string]any) string {
		tok, err := p.Sign(c)
		require.NoError(t, err)
		return tok
	}
	otherTok, err := newPKI(t).Sign(good)
	require.NoError(t, err)

	tests := []struct {
		name    string
		token   string
		wantErr string
	}{
		{name: "valid", token: sign(good)},
		{name: "audience in a list", token: sign(with("aud", []string{"x", devpki.Audience}))},
		{name: "expired", token: sign(with("exp", now.Add(-time.Hour).Unix())), wantErr: "token expired"},
		{name: "within leeway", token: sign(with("exp", now.Add(-10*time.Second).Unix()))},
		{name: "no expiry", token: sign(with("exp", nil)), wantErr: "no expiry"},
		{name: "no subject", token: sign(with("sub", nil)), wantErr: "no subject"},
		{name: "wrong issuer", token: sign(with("iss", "evil")), wantErr: "issuer not accepted"},
		{name: "wrong audience", token: sign(with("aud", "other")), wantErr: "audience not accepted"},
		{name: "not yet valid", token: sign(with("nbf", now.Add(time.Hour).Unix())), wantErr: "not valid"},
		{name: "another key", token: otherTok, wantErr: "does not verify"},
		{name: "alg none", token: unsigned(good), wantErr: "unsupported"},
		{name: "hmac with the public key", token: hmacWithPublicKey(t, p, good), wantErr: "unsupported"},
		{name: "garbage", token: "a.b.c", wantErr: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tt.token)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.NotContains(t, err.Error(), tt.token, "the error never repeats the token")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "alice", id.Subject)
			assert.Equal(t, MethodJWT, id.Method)
			assert.Equal(t, []any{"viewer"}, id.Claims["roles"])
		})
	}
}

func TestVerifyRS256(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	dir := t.TempDir()
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "r1", Algorithm: "RS256", Use: "sig"}}})
	require.NoError(t, err)
	path := filepath.Join(dir, "jwks.json")
	require.NoError(t, os.WriteFile(path, jwks, 0o600))
	v, err := NewTokenVerifier(context.Background(), TokenConfig{JWKSFile: path, Issuer: "i", Audience: "a"})
	require.NoError(t, err)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "r1"}}, nil)
	require.NoError(t, err)
	tok, err := jwt.Signed(signer).Claims(map[string]any{"iss": "i", "aud": "a", "sub": "svc", "exp": time.Now().Add(time.Minute).Unix()}).Serialize()
	require.NoError(t, err)
	id, err := v.Verify(context.Background(), tok)
	require.NoError(t, err)
	assert.Equal(t, "svc", id.Subject)
}

func TestNewTokenVerifierRefusesBadSettings(t *testing.T) {
	p := newPKI(t)
	priv := filepath.Join(t.TempDir(), "private.json")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "k"}}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(priv, b, 0o600))
	tests := []struct {
		name    string
		cfg     TokenConfig
		wantErr string
	}{
		{name: "no keys", cfg: TokenConfig{Issuer: "i", Audience: "a"}, wantErr: "exactly one"},
		{name: "both", cfg: TokenConfig{JWKSFile: p.JWKSFile(), JWKSURL: "http://x", Issuer: "i", Audience: "a"}, wantErr: "exactly one"},
		{name: "no issuer", cfg: TokenConfig{JWKSFile: p.JWKSFile(), Audience: "a"}, wantErr: "issuer and an audience"},
		{name: "missing file", cfg: TokenConfig{JWKSFile: filepath.Join(t.TempDir(), "none"), Issuer: "i", Audience: "a"}, wantErr: "read jwks"},
		{name: "negative cache TTL", cfg: TokenConfig{JWKSFile: p.JWKSFile(), Issuer: "i", Audience: "a", CacheTTL: -time.Second}, wantErr: "cannot be negative"},
		{name: "private key", cfg: TokenConfig{JWKSFile: priv, Issuer: "i", Audience: "a"}, wantErr: "not a public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTokenVerifier(context.Background(), tt.cfg)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// TestJWKSURL: keys from a URL are fetched at start, fetched again for an
// unknown key id (not more often than MinRefresh), and kept when a refresh
// fails.
func TestJWKSURL(t *testing.T) {
	first, second := newPKI(t), newPKI(t)
	serve := atomic.Pointer[string]{}
	path := first.JWKSFile()
	serve.Store(&path)
	var fetches atomic.Int32
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		http.ServeFile(w, r, *serve.Load())
	}))
	t.Cleanup(srv.Close)

	now := time.Now()
	clock := func() time.Time { return now }
	v, err := NewTokenVerifier(context.Background(), TokenConfig{JWKSURL: srv.URL, Issuer: devpki.Issuer, Audience: devpki.Audience, Now: clock})
	require.NoError(t, err)
	require.EqualValues(t, 1, fetches.Load())

	tok1, err := first.Token("a", nil, time.Hour)
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), tok1)
	require.NoError(t, err)
	require.EqualValues(t, 1, fetches.Load(), "a known key needs no fetch")

	// The provider rotates its key; both PKIs use the same key id, so the
	// new key is found only after the periodic refresh.
	next := second.JWKSFile()
	serve.Store(&next)
	tok2, err := second.Token("b", nil, time.Hour)
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), tok2)
	require.Error(t, err, "the old keys are still cached")
	now = now.Add(11 * time.Minute)
	_, err = v.Verify(context.Background(), tok2)
	require.NoError(t, err, "refreshed after Refresh")

	down.Store(true)
	now = now.Add(11 * time.Minute)
	_, err = v.Verify(context.Background(), tok2)
	require.NoError(t, err, "a failed refresh keeps the keys")
}

func TestNewTokenVerifierURLDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	_, err := NewTokenVerifier(context.Background(), TokenConfig{JWKSURL: srv.URL, Issuer: "i", Audience: "a"})
	require.ErrorContains(t, err, "404")
}
