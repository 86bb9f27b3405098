package main

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/testca"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestDestinationAuth(t *testing.T) {
	const (
		clientSecret = "oauth-client-s3cret"
		signing      = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		signingNext  = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="
	)
	certPEM, keyPEM := testca.SelfSigned(t, "spool-dispatcher")
	cert, key := string(certPEM), string(keyPEM)
	base := []string{"-queue-url", "q", "-table", "t", "-destination-url", "https://dest/pay?api_key=querysecret"}
	oauth := append(append([]string(nil), base...), "-destination-oauth2-token-url", "https://auth/token", "-destination-oauth2-client-id", "spool")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, a destAuth)
		wantErr string
	}{
		{
			name: "nothing configured",
			args: base,
			check: func(t *testing.T, a destAuth) {
				require.Equal(t, "none", a.describe())
				require.Equal(t, uint16(tls.VersionTLS12), a.tls.MinVersion)
				require.Nil(t, a.tls.RootCAs, "the system's roots")
			},
		},
		{
			name:    "plaintext refused",
			args:    []string{"-queue-url", "q", "-table", "t", "-destination-url", "http://dest/pay?sig=querysecret"},
			wantErr: "-destination-url http://dest/pay?REDACTED: plaintext http would carry payroll data",
		},
		{
			name:  "plaintext allowed from the environment",
			args:  []string{"-queue-url", "q", "-table", "t", "-destination-url", "http://127.0.0.1:8080/pay"},
			env:   map[string]string{"SPOOL_ALLOW_INSECURE_DESTINATION": "true"},
			check: func(t *testing.T, a destAuth) { require.True(t, a.allowInsecure) },
		},
		{
			name:    "plaintext token endpoint refused too",
			args:    append(append([]string(nil), base...), "-destination-oauth2-token-url", "http://auth/token", "-destination-oauth2-client-id", "spool"),
			env:     map[string]string{envClientSecret: clientSecret},
			wantErr: "-destination-oauth2-token-url http://auth/token: plaintext",
		},
		{
			name: "OAuth2 secret from the environment",
			args: oauth,
			env:  map[string]string{envClientSecret: clientSecret},
			check: func(t *testing.T, a destAuth) {
				require.Equal(t, clientSecret, a.clientSecret)
				require.Equal(t, "oauth2", a.describe())
			},
		},
		{
			name: "OAuth2 secret from a file, trailing newline dropped",
			args: oauth,
			env:  map[string]string{envClientSecret + "_FILE": writeFile(t, "secret", clientSecret+"\n")},
			check: func(t *testing.T, a destAuth) {
				require.Equal(t, clientSecret, a.clientSecret)
			},
		},
		{
			name:    "OAuth2 secret twice",
			args:    oauth,
			env:     map[string]string{envClientSecret: clientSecret, envClientSecret + "_FILE": writeFile(t, "secret", clientSecret)},
			wantErr: "$SPOOL_DESTINATION_OAUTH2_CLIENT_SECRET and -destination-oauth2-client-secret-file ($SPOOL_DESTINATION_OAUTH2_CLIENT_SECRET_FILE) both set",
		},
		{
			name:    "OAuth2 without its secret",
			args:    oauth,
			wantErr: "needs -destination-oauth2-client-id and the secret",
		},
		{
			name:    "OAuth2 secret without a token URL",
			args:    base,
			env:     map[string]string{envClientSecret: clientSecret},
			wantErr: "without -destination-oauth2-token-url",
		},
		{
			name:    "OAuth2 and a static Authorization header",
			args:    append(append([]string(nil), oauth...), "-destination-header", "Authorization: Basic c2VjcmV0"),
			env:     map[string]string{envClientSecret: clientSecret},
			wantErr: "keep one",
		},
		{
			name:    "OAuth2 and an Authorization header from the file",
			args:    append(append([]string(nil), oauth...), "-destination-header-file", writeFile(t, "h", "authorization: Basic c2VjcmV0\n")),
			env:     map[string]string{envClientSecret: clientSecret},
			wantErr: "keep one",
		},
		{
			name: "two signing secrets, space-separated",
			args: base,
			env:  map[string]string{envSigningSecrets: signing + " " + signingNext},
			check: func(t *testing.T, a destAuth) {
				require.Equal(t, "signed", a.describe())
				require.Len(t, a.signer.Sign("id", time.Unix(1, 0), nil), 2*len("v1,")+2*44+1)
			},
		},
		{
			name:  "signing secrets from a file, a line each",
			args:  append(append([]string(nil), base...), "-destination-signing-secrets-file", writeFile(t, "whsec", signing+"\n"+signingNext+"\n")),
			check: func(t *testing.T, a destAuth) { require.NotNil(t, a.signer) },
		},
		{
			name:    "malformed signing secret",
			args:    base,
			env:     map[string]string{envSigningSecrets: signing + " whsec_not*base64*querysecret"},
			wantErr: "$SPOOL_DESTINATION_SIGNING_SECRETS: signing secret 2: want whsec_ followed by base64",
		},
		{
			name: "mutual TLS from files, extra CA, TLS 1.3",
			args: append(append([]string(nil), base...), "-destination-client-cert-file", writeFile(t, "c.pem", cert),
				"-destination-client-key-file", writeFile(t, "k.pem", key), "-destination-ca-file", writeFile(t, "ca.pem", cert),
				"-destination-tls-min-version", "1.3"),
			check: func(t *testing.T, a destAuth) {
				require.Equal(t, "mtls", a.describe())
				require.Len(t, a.tls.Certificates, 1)
				require.NotNil(t, a.tls.RootCAs)
				require.Equal(t, uint16(tls.VersionTLS13), a.tls.MinVersion)
			},
		},
		{
			name:  "mutual TLS key in the environment (as ECS injects a secret)",
			args:  append(append([]string(nil), base...), "-destination-client-cert-file", writeFile(t, "c.pem", cert)),
			env:   map[string]string{envClientKey: key},
			check: func(t *testing.T, a destAuth) { require.Len(t, a.tls.Certificates, 1) },
		},
		{
			name:    "certificate without key",
			args:    append(append([]string(nil), base...), "-destination-client-cert-file", writeFile(t, "c.pem", cert)),
			wantErr: "set both or neither",
		},
		{
			name:    "key that is not one",
			args:    base,
			env:     map[string]string{envClientCert: cert, envClientKey: "querysecret"},
			wantErr: "destination client certificate and key: tls: failed to find any PEM data in key input",
		},
		{
			name:    "CA bundle without a certificate",
			args:    append(append([]string(nil), base...), "-destination-ca-file", writeFile(t, "ca.pem", "querysecret")),
			wantErr: "destination CA bundle: no PEM certificate in it",
		},
		{
			name:    "missing file",
			args:    append(append([]string(nil), base...), "-destination-signing-secrets-file", "/nonexistent/whsec"),
			wantErr: "-destination-signing-secrets-file: open /nonexistent/whsec",
		},
		{
			name:    "unknown TLS version",
			args:    append(append([]string(nil), base...), "-destination-tls-min-version", "1.1"),
			wantErr: `-destination-tls-min-version "1.1": want 1.2 or 1.3`,
		},
		{
			name: "headers from a file join the flag's",
			args: append(append([]string(nil), base...), "-destination-header", "X-Tenant: acme",
				"-destination-header-file", writeFile(t, "h", "X-Api-Key: querysecret\n")),
			check: func(t *testing.T, a destAuth) {
				h := a.header(nil)
				require.Equal(t, "querysecret", h.Get("X-Api-Key"))
				require.Empty(t, h.Get("X-Tenant"), "the flag's come from the config")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseEnv(tt.args, tt.env)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				for _, secret := range []string{clientSecret, "querysecret", "c2VjcmV0"} {
					require.NotContains(t, err.Error(), secret)
				}
				return
			}
			require.NoError(t, err)
			tt.check(t, c.dest)
		})
	}
}
