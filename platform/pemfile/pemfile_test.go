package pemfile_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/devpki"
	"github.com/spoolhq/spool/platform/pemfile"
)

func TestCertPool(t *testing.T) {
	dir := t.TempDir()
	pki, err := devpki.New(dir)
	require.NoError(t, err)
	notPEM := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(notPEM, []byte("eyJhbGciOiJFUzI1NiJ9.e30.sig"), 0o600))

	tests := []struct {
		name, path, wantErr string
	}{
		{name: "a CA bundle", path: pki.CAFile()},
		{name: "no such file", path: filepath.Join(dir, "missing.pem"), wantErr: "no such file"},
		{name: "not PEM", path: notPEM, wantErr: "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := pemfile.CertPool(tt.path)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, pool)
				return
			}
			require.NoError(t, err)
			// The pool holds the CA: the server certificate it signed verifies.
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
			require.NoError(t, err)
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			require.NoError(t, err)
			_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"})
			require.NoError(t, err)
		})
	}
}
