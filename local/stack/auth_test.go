package stack

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/devpki"
)

// claims decodes a token's payload without verifying it: the servers'
// tests verify; here only what the stack asked for matters.
func claims(tb testing.TB, tok string) map[string]any {
	tb.Helper()
	parts := strings.Split(tok, ".")
	require.Len(tb, parts, 3, "a compact JWS")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(tb, err)
	var c map[string]any
	require.NoError(tb, json.Unmarshal(b, &c))
	return c
}

func envMap(kvs []string) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestSetUpAuth(t *testing.T) {
	dir := filepath.Join(t.TempDir(), PKIDir)
	pki, err := devpki.New(dir)
	require.NoError(t, err)
	serviceEnv, clientEnv, tokens, err := authEnv(pki)
	require.NoError(t, err)

	svc := envMap(serviceEnv)
	for k, v := range envMap(pki.ServerEnv()) {
		require.Equal(t, v, svc[k], "services get the PKI's %s", k)
	}
	require.Equal(t, "true", svc["SPOOL_GRPC_REFLECTION"], "grpcurl works on the local stack")
	require.NotContains(t, svc, "SPOOL_INSECURE")
	for _, k := range []string{"SPOOL_TLS_CERT_FILE", "SPOOL_TLS_KEY_FILE", "SPOOL_AUTH_POLICY_FILE", "SPOOL_AUTH_JWKS_FILE"} {
		require.FileExists(t, svc[k])
	}

	cli := envMap(clientEnv)
	require.Equal(t, pki.CAFile(), cli["SPOOL_CA_FILE"])
	want := map[string]string{
		"SPOOL_TOKEN": "admin", "SPOOL_TOKEN_SUBMITTER": "submitter", "SPOOL_TOKEN_VIEWER": "viewer",
		"SPOOL_TOKEN_OPERATOR": "operator", "SPOOL_TOKEN_APPROVER": "approver",
	}
	subjects := map[string]bool{}
	for env, role := range want {
		t.Run(env, func(t *testing.T) {
			tok := cli[env]
			require.NotEmpty(t, tok)
			require.Equal(t, tokens[role], tok)
			c := claims(t, tok)
			require.Equal(t, []any{role}, c["roles"])
			require.Equal(t, devpki.Issuer, c["iss"])
			life := time.Duration(c["exp"].(float64)-c["iat"].(float64)) * time.Second
			require.Equal(t, TokenTTL, life)
			require.GreaterOrEqual(t, life, 8*time.Hour, "a working day")
			subjects[c["sub"].(string)] = true
		})
	}
	// Four-eyes needs the operator and the approver to be two people.
	require.Len(t, subjects, len(want), "each token names its own subject")

}

func TestWritePKI(t *testing.T) {
	dir := t.TempDir()
	files, err := WritePKI(dir, "ingestor", "dispatcher")
	require.NoError(t, err)
	server, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(server.Certificate[0])
	require.NoError(t, err)
	for _, h := range []string{"ingestor", "dispatcher", "localhost"} {
		require.NoError(t, leaf.VerifyHostname(h), "the server certificate names %s", h)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	require.Len(t, files, len(roles))
	for i, f := range files {
		require.Equal(t, filepath.Join(dir, TokensDir, roles[i].name), f)
		st, err := os.Stat(f)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "a token is a secret")
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.Equal(t, []any{roles[i].name}, claims(t, strings.TrimSpace(string(b)))["roles"])
	}

	// Run again (docker compose up again), the CA stays and tokens are new.
	again, err := WritePKI(dir, "ingestor", "dispatcher")
	require.NoError(t, err)
	require.Equal(t, files, again)
	ca2, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	require.Equal(t, ca, ca2)
}

func TestClientConfig(t *testing.T) {
	pki, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	_, _, tokens, err := authEnv(pki)
	require.NoError(t, err)
	s := &Stack{opts: Options{PKI: pki}, Tokens: tokens}

	c, err := s.ClientConfig("operator")
	require.NoError(t, err)
	require.Equal(t, pki.CAFile(), c.CAFile)
	require.Equal(t, tokens["operator"], c.Token)

	c, err = s.ClientConfig("")
	require.NoError(t, err)
	require.Empty(t, c.Token, "no role, no token: the CA alone (health checks)")
	require.True(t, c.TLS())

	_, err = s.ClientConfig("root")
	require.ErrorContains(t, err, `no token for role "root"`)

	c, err = (&Stack{}).ClientConfig("admin")
	require.NoError(t, err)
	require.False(t, c.TLS(), "an insecure stack is dialled in plaintext")
}

func TestEnvFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, EnvFile)
	// A stack.env left by an older stack, readable by all.
	require.NoError(t, os.WriteFile(path, []byte("OLD=1\n"), 0o644))
	s := &Stack{opts: Options{StateDir: dir}, Env: []string{"SPOOL_TOKEN=secret"}}
	require.NoError(t, s.writeFiles())
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "SPOOL_TOKEN=secret\n", string(b))
}
