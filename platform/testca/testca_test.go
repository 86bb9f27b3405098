package testca_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/testca"
)

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}

// An issued certificate verifies against its CA, for its name and usage
// only, and not against another CA.
func TestIssue(t *testing.T) {
	ca, other := testca.New(t), testca.New(t)
	tests := []struct {
		name    string
		subject string
		usage   x509.ExtKeyUsage
		roots   *testca.CA
		dns     string
		wantErr string
	}{
		{name: "server by IP", subject: "127.0.0.1", usage: x509.ExtKeyUsageServerAuth, roots: ca, dns: "127.0.0.1"},
		{name: "client", subject: "alice", usage: x509.ExtKeyUsageClientAuth, roots: ca},
		{name: "another CA", subject: "127.0.0.1", usage: x509.ExtKeyUsageServerAuth, roots: other, wantErr: "unknown authority"},
		{name: "another name", subject: "127.0.0.1", usage: x509.ExtKeyUsageServerAuth, roots: ca, dns: "10.0.0.1", wantErr: "valid for 127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM := ca.Issue(t, tt.subject, tt.usage)
			_, err := tls.X509KeyPair(certPEM, keyPEM)
			require.NoError(t, err, "the key matches the certificate")
			roots := x509.NewCertPool()
			require.True(t, roots.AppendCertsFromPEM(tt.roots.PEM))
			c := parse(t, certPEM)
			require.Equal(t, tt.subject, c.Subject.CommonName)
			_, err = c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.dns, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
		})
	}
}

// A self-signed certificate is its own root, for its host alone.
func TestSelfSigned(t *testing.T) {
	for _, host := range []string{"ingestor.spool.internal", "127.0.0.1"} {
		t.Run(host, func(t *testing.T) {
			certPEM, keyPEM := testca.SelfSigned(t, host)
			_, err := tls.X509KeyPair(certPEM, keyPEM)
			require.NoError(t, err)
			roots := x509.NewCertPool()
			require.True(t, roots.AppendCertsFromPEM(certPEM))
			c := parse(t, certPEM)
			_, err = c.Verify(x509.VerifyOptions{Roots: roots, DNSName: host})
			require.NoError(t, err)
			_, err = c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"})
			require.Error(t, err)
		})
	}
}
