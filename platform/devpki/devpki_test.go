package devpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// verify checks tok against the PKI's published JWKS, as a server would.
func verify(t *testing.T, p *PKI, tok string) (jwt.Claims, []string, error) {
	t.Helper()
	b, err := os.ReadFile(p.JWKSFile())
	require.NoError(t, err)
	var set jose.JSONWebKeySet
	require.NoError(t, json.Unmarshal(b, &set))
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	require.NoError(t, err)
	require.Len(t, parsed.Headers, 1)
	keys := set.Key(parsed.Headers[0].KeyID)
	require.Len(t, keys, 1, "token's key id is in the JWKS")
	var std jwt.Claims
	var extra struct {
		Roles []string `json:"roles"`
	}
	if err := parsed.Claims(keys[0].Key, &std, &extra); err != nil {
		return std, nil, err
	}
	return std, extra.Roles, std.Validate(jwt.Expected{Issuer: Issuer, AnyAudience: jwt.Audience{Audience}})
}

func TestNewWritesEverything(t *testing.T) {
	dir := t.TempDir()
	p, err := New(dir)
	require.NoError(t, err)
	for _, f := range []string{p.CAFile(), p.ServerCertFile(), p.ServerKeyFile(), p.ClientCertFile(), p.ClientKeyFile(), p.JWKSFile(), p.PolicyFile()} {
		info, err := os.Stat(f)
		require.NoError(t, err, f)
		if strings.HasSuffix(f, "-key.pem") {
			assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "%s is private", f)
		}
	}
	b, err := os.ReadFile(p.JWKSFile())
	require.NoError(t, err)
	assert.NotContains(t, string(b), `"d"`, "the JWKS holds no private key")

	env := map[string]string{}
	for _, kv := range p.ServerEnv() {
		k, v, ok := strings.Cut(kv, "=")
		require.True(t, ok, kv)
		env[k] = v
	}
	assert.Equal(t, map[string]string{
		"SPOOL_TLS_CERT_FILE":      p.ServerCertFile(),
		"SPOOL_TLS_KEY_FILE":       p.ServerKeyFile(),
		"SPOOL_TLS_CLIENT_CA_FILE": p.CAFile(),
		"SPOOL_AUTH_JWKS_FILE":     p.JWKSFile(),
		"SPOOL_AUTH_ISSUER":        Issuer,
		"SPOOL_AUTH_AUDIENCE":      Audience,
		"SPOOL_AUTH_POLICY_FILE":   p.PolicyFile(),
	}, env)
}

func TestTokens(t *testing.T) {
	p, err := New(t.TempDir())
	require.NoError(t, err)

	tok, err := p.Token("alice", []string{"operator", "viewer"}, time.Hour)
	require.NoError(t, err)
	claims, roles, err := verify(t, p, tok)
	require.NoError(t, err)
	assert.Equal(t, "alice", claims.Subject)
	assert.Equal(t, []string{"operator", "viewer"}, roles)
	assert.WithinDuration(t, time.Now().Add(time.Hour), claims.Expiry.Time(), time.Minute)

	expired, err := p.Token("alice", nil, -time.Minute)
	require.NoError(t, err)
	_, _, err = verify(t, p, expired)
	assert.ErrorIs(t, err, jwt.ErrExpired)

	wrongAud, err := p.Sign(map[string]any{"iss": Issuer, "aud": "other", "sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
	require.NoError(t, err)
	_, _, err = verify(t, p, wrongAud)
	assert.ErrorIs(t, err, jwt.ErrInvalidAudience)

	other, err := New(t.TempDir())
	require.NoError(t, err)
	foreign, err := other.Token("alice", nil, time.Hour)
	require.NoError(t, err)
	_, _, err = verify(t, p, foreign)
	assert.Error(t, err, "a token of another PKI does not verify")
}

func TestNewReusesAnExistingPKI(t *testing.T) {
	dir := t.TempDir()
	first, err := New(dir)
	require.NoError(t, err)
	tok, err := first.Token("bob", []string{"admin"}, time.Hour)
	require.NoError(t, err)
	ca, err := os.ReadFile(first.CAFile())
	require.NoError(t, err)

	second, err := New(dir)
	require.NoError(t, err)
	again, err := os.ReadFile(second.CAFile())
	require.NoError(t, err)
	assert.Equal(t, ca, again, "the CA is kept")
	_, _, err = verify(t, second, tok)
	assert.NoError(t, err, "a token minted before still verifies")

	require.NoError(t, os.Remove(first.ClientCertFile()))
	third, err := New(dir)
	require.NoError(t, err)
	made, err := os.ReadFile(third.CAFile())
	require.NoError(t, err)
	assert.NotEqual(t, ca, made, "an incomplete PKI is made anew")
	_, err = os.Stat(third.ClientCertFile())
	assert.NoError(t, err)
}

// TestMutualTLS runs a handshake between the server certificate and the
// client configuration over loopback, as the gRPC servers will.
func TestMutualTLS(t *testing.T) {
	p, err := New(t.TempDir())
	require.NoError(t, err)
	serverCert, err := tls.LoadX509KeyPair(p.ServerCertFile(), p.ServerKeyFile())
	require.NoError(t, err)
	pool, err := p.CertPool()
	require.NoError(t, err)

	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = lis.Close() })
	peer := make(chan string, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			peer <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			peer <- err.Error()
			return
		}
		peer <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		_, _ = io.WriteString(c, "ok")
	}()

	leaf, err := x509.ParseCertificate(serverCert.Certificate[0])
	require.NoError(t, err)
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool})
		assert.NoError(t, err, "server certificate names %s", host)
	}

	cfg, err := p.ClientTLS()
	require.NoError(t, err)
	cfg.ServerName = "127.0.0.1"
	conn, err := tls.Dial("tcp", lis.Addr().String(), cfg)
	require.NoError(t, err)
	b, err := io.ReadAll(conn)
	require.NoError(t, err)
	assert.Equal(t, "ok", string(b))
	_ = conn.Close()
	assert.Equal(t, ClientName, <-peer)
}

func TestPolicyFile(t *testing.T) {
	p, err := New(t.TempDir())
	require.NoError(t, err)
	b, err := os.ReadFile(p.PolicyFile())
	require.NoError(t, err)
	var pol struct {
		Roles    map[string][]string `json:"roles"`
		Bindings []struct {
			Claim, Value, Certificate string
			Roles                     []string
		} `json:"bindings"`
	}
	require.NoError(t, json.Unmarshal(b, &pol))
	assert.Equal(t, []string{"submit"}, pol.Roles["submitter"])
	assert.Equal(t, []string{"view"}, pol.Roles["viewer"])
	assert.Equal(t, pol.Roles["operator"], pol.Roles["approver"])
	assert.Contains(t, pol.Roles["admin"], "inline-business-keys")
	assert.NotContains(t, pol.Roles["operator"], "submit")
	granted := map[string]bool{}
	for _, b := range pol.Bindings {
		if b.Claim == "roles" {
			assert.Equal(t, []string{b.Value}, b.Roles)
			granted[b.Value] = true
		}
		if b.Certificate != "" {
			assert.Equal(t, ClientName, b.Certificate)
		}
	}
	assert.Len(t, granted, 5)
}

func TestExtraHosts(t *testing.T) {
	serverCert := func(t *testing.T, p *PKI) *x509.Certificate {
		t.Helper()
		c, err := readCert(p.ServerCertFile())
		require.NoError(t, err)
		return c
	}
	tests := []struct {
		name     string
		first    []string // hosts the PKI is made with
		then     []string // hosts asked for when it is opened again
		want     []string // names the server certificate must carry at the end
		reissued bool
		notNamed []string
	}{
		{name: "loopback only", want: []string{"localhost", "127.0.0.1", "::1"}, notNamed: []string{"ingestor"}},
		{name: "compose hosts", first: []string{"ingestor", "dispatcher", "10.0.0.5"},
			want: []string{"localhost", "127.0.0.1", "::1", "ingestor", "dispatcher", "10.0.0.5"}, notNamed: []string{"sink"}},
		{name: "reopened with the same hosts", first: []string{"ingestor"}, then: []string{"ingestor"},
			want: []string{"localhost", "ingestor"}},
		{name: "reopened without hosts keeps them", first: []string{"ingestor"}, then: nil,
			want: []string{"localhost", "ingestor"}},
		{name: "reopened with a new host", first: []string{"ingestor"}, then: []string{"dispatcher"},
			want: []string{"localhost", "dispatcher"}, reissued: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p, err := New(dir, tt.first...)
			require.NoError(t, err)
			before := serverCert(t, p)
			caBefore, err := os.ReadFile(p.CAFile())
			require.NoError(t, err)
			tok, err := p.Token("alice", nil, time.Hour)
			require.NoError(t, err)

			p, err = New(dir, tt.then...)
			require.NoError(t, err)
			after := serverCert(t, p)
			assert.Equal(t, tt.reissued, !before.Equal(after), "server certificate reissued")

			caAfter, err := os.ReadFile(p.CAFile())
			require.NoError(t, err)
			assert.Equal(t, caBefore, caAfter, "the CA is kept")
			_, _, err = verify(t, p, tok)
			require.NoError(t, err, "tokens minted before still verify")

			pool, err := p.CertPool()
			require.NoError(t, err)
			for _, h := range tt.want {
				_, err := after.Verify(x509.VerifyOptions{DNSName: h, Roots: pool})
				assert.NoError(t, err, "certificate names %s", h)
			}
			for _, h := range tt.notNamed {
				assert.Error(t, after.VerifyHostname(h), "certificate does not name %s", h)
			}
		})
	}
}
