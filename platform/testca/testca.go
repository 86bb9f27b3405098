// Package testca makes throwaway certificates for tests: a certificate
// authority that issues server and client certificates, and self-signed
// certificates. Keys are P-256 and certificates are valid for an hour
// either side of now. Only tests import it; local/ and devpki make the
// PKI the local stack runs with.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// CA is a certificate authority for one test.
type CA struct {
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// PEM is Cert, PEM encoded: what a client's CA file holds.
	PEM []byte
	key *ecdsa.PrivateKey
}

// New returns a fresh certificate authority.
func New(tb testing.TB) *CA {
	tb.Helper()
	tmpl := template(tb, "test CA")
	tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	key := newKey(tb)
	certPEM, _ := sign(tb, tmpl, tmpl, key, key)
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatalf("parse the CA certificate: %v", err)
	}
	return &CA{Cert: cert, PEM: certPEM, key: key}
}

// Issue returns a certificate the CA signed for name, for usage, and its
// key, both PEM encoded. name is the common name, and the subject
// alternative name too when it is an IP address.
func (ca *CA) Issue(tb testing.TB, name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	tb.Helper()
	tmpl := template(tb, name)
	tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{usage}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	return sign(tb, tmpl, ca.Cert, newKey(tb), ca.key)
}

// SelfSigned returns a certificate for host (a DNS name or an IP address)
// signed by its own key, and that key, both PEM encoded. It serves as a
// server or client certificate, and as the CA file that trusts it.
func SelfSigned(tb testing.TB, host string) (certPEM, keyPEM []byte) {
	tb.Helper()
	tmpl := template(tb, host)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	key := newKey(tb)
	return sign(tb, tmpl, tmpl, key, key)
}

// template is a certificate for name with a random serial number.
func template(tb testing.TB, name string) *x509.Certificate {
	tb.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		tb.Fatalf("serial number: %v", err)
	}
	return &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate a key: %v", err)
	}
	return key
}

// sign makes the certificate tmpl for key, signed by parent's key, and
// returns it and key PEM encoded.
func sign(tb testing.TB, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) (certPEM, keyPEM []byte) {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		tb.Fatalf("create the certificate for %s: %v", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("encode the key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}
