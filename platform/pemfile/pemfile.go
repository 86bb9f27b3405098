// Package pemfile reads the PEM files TLS settings name. Servers (the
// client CAs of mutual TLS), clients (the CA they trust) and the local PKI
// all read a CA bundle the same way, and should fail the same way when the
// file holds no certificate.
package pemfile

import (
	"crypto/x509"
	"fmt"
	"os"
)

// CertPool returns a pool holding every certificate in the PEM file at
// path, and an error when the file cannot be read or holds none (a key or
// a token file named by mistake).
func CertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err // it names the path and the operation; callers say which setting
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
