// Package devpki makes a throwaway public-key infrastructure for tests and
// the local stack: a certificate authority, a server certificate for the
// loopback names (and any others asked for), a client certificate, a token-signing key with its JWKS,
// and a policy file granting the usual roles. Everything lives in one
// directory, so a process started by hand can join by reading the same
// files.
//
// Nothing here is fit for production: keys are written unencrypted and the
// policy grants whatever a token's roles claim asks for.
package devpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/spoolhq/spool/platform/pemfile"
)

// Names of what a PKI writes in its directory.
const (
	caCertName     = "ca.pem"
	caKeyName      = "ca-key.pem"
	serverCertName = "server.pem"
	serverKeyName  = "server-key.pem"
	clientCertName = "client.pem"
	clientKeyName  = "client-key.pem"
	signingKeyName = "signing-key.pem"
	jwksName       = "jwks.json"
	policyName     = "policy.json"
)

const (
	// Issuer is the iss claim of the tokens a PKI mints.
	Issuer = "spool-devpki"
	// Audience is the aud claim of the tokens a PKI mints.
	Audience = "spool"
	// ClientName is the common name of the client certificate; the policy
	// binds it to the admin role.
	ClientName = "spool-client"
	// keyID names the signing key in the JWKS and in each token's header.
	keyID = "devpki-1"
	// validity is how long the certificates are valid. A PKI whose CA
	// expires within a day is made anew.
	validity = 365 * 24 * time.Hour
)

// Roles the policy defines, each granted to a token whose roles claim names
// it.
var rolePermissions = map[string][]string{
	"submitter": {"submit"},
	"viewer":    {"view"},
	"operator":  {"view", "operate", "resolve", "redrive"},
	// An approver is a second operator, so that four-eyes has someone to ask.
	"approver": {"view", "operate", "resolve", "redrive"},
	"admin":    {"submit", "view", "operate", "resolve", "redrive", "inline-business-keys"},
}

// PKI is a throwaway PKI kept in one directory.
type PKI struct {
	dir        string
	signingKey *ecdsa.PrivateKey
	now        func() time.Time
}

// New returns the PKI in dir, making it when dir does not hold a complete,
// valid one already. Reusing an existing PKI keeps tokens minted earlier
// valid across restarts of the local stack.
//
// The server certificate names localhost, 127.0.0.1 and ::1, and each of
// hosts (a DNS name or an IP address): the names clients dial, such as the
// service names of a compose network. An existing PKI whose server
// certificate lacks one of them gets a new server certificate from the
// same CA, so clients that trust the CA keep working.
func New(dir string, hosts ...string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make pki directory: %w", err)
	}
	p := &PKI{dir: dir, now: time.Now}
	if key, err := p.load(); err == nil {
		p.signingKey = key
		if err := p.coverHosts(hosts); err != nil {
			return nil, err
		}
		return p, nil
	}
	if err := p.create(hosts); err != nil {
		return nil, err
	}
	return p, nil
}

// coverHosts issues a new server certificate when the existing one does
// not name every one of hosts.
func (p *PKI) coverHosts(hosts []string) error {
	cert, err := readCert(p.ServerCertFile())
	if err != nil {
		return fmt.Errorf("read server certificate: %w", err)
	}
	missing := false
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	ca, err := readCert(p.CAFile())
	if err != nil {
		return fmt.Errorf("read ca certificate: %w", err)
	}
	caKey, err := readKey(p.path(caKeyName))
	if err != nil {
		return fmt.Errorf("read ca key: %w", err)
	}
	return p.issueLeaf(p.ServerCertFile(), p.ServerKeyFile(), serverTemplate(hosts), ca, caKey)
}

// serverTemplate is the server certificate for the loopback names and
// hosts.
func serverTemplate(hosts []string) *x509.Certificate {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

// Dir returns the directory the PKI lives in.
func (p *PKI) Dir() string { return p.dir }

// CAFile is the CA certificate clients trust.
func (p *PKI) CAFile() string { return p.path(caCertName) }

// ServerCertFile and ServerKeyFile are the server's certificate and key.
func (p *PKI) ServerCertFile() string { return p.path(serverCertName) }

// ServerKeyFile is the server's private key.
func (p *PKI) ServerKeyFile() string { return p.path(serverKeyName) }

// ClientCertFile is the client certificate (common name ClientName).
func (p *PKI) ClientCertFile() string { return p.path(clientCertName) }

// ClientKeyFile is the client certificate's private key.
func (p *PKI) ClientKeyFile() string { return p.path(clientKeyName) }

// JWKSFile holds the public key that verifies the PKI's tokens.
func (p *PKI) JWKSFile() string { return p.path(jwksName) }

// PolicyFile is the policy granting the roles submitter, viewer, operator,
// approver and admin.
func (p *PKI) PolicyFile() string { return p.path(policyName) }

// ServerEnv returns the KEY=VALUE settings a service process needs to serve
// TLS (with optional client certificates) and verify the PKI's tokens.
func (p *PKI) ServerEnv() []string {
	return []string{
		"SPOOL_TLS_CERT_FILE=" + p.ServerCertFile(),
		"SPOOL_TLS_KEY_FILE=" + p.ServerKeyFile(),
		"SPOOL_TLS_CLIENT_CA_FILE=" + p.CAFile(),
		"SPOOL_AUTH_JWKS_FILE=" + p.JWKSFile(),
		"SPOOL_AUTH_ISSUER=" + Issuer,
		"SPOOL_AUTH_AUDIENCE=" + Audience,
		"SPOOL_AUTH_POLICY_FILE=" + p.PolicyFile(),
	}
}

// ClientTLS returns a client configuration that trusts the PKI's CA and
// presents the client certificate.
func (p *PKI) ClientTLS() (*tls.Config, error) {
	pool, err := p.CertPool()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(p.ClientCertFile(), p.ClientKeyFile())
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// CertPool returns a pool holding only the PKI's CA.
func (p *PKI) CertPool() (*x509.CertPool, error) {
	pool, err := pemfile.CertPool(p.CAFile())
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	return pool, nil
}

// Token mints a token for subject holding roles, valid for ttl. A negative
// ttl mints one that has already expired.
func (p *PKI) Token(subject string, roles []string, ttl time.Duration) (string, error) {
	now := p.now()
	if roles == nil {
		roles = []string{}
	}
	return p.Sign(map[string]any{
		"iss":   Issuer,
		"aud":   Audience,
		"sub":   subject,
		"iat":   now.Unix(),
		"nbf":   now.Add(-time.Minute).Unix(),
		"exp":   now.Add(ttl).Unix(),
		"roles": roles,
	})
}

// Sign signs arbitrary claims with the PKI's key (ES256), for tests that
// need a token with the wrong issuer or audience.
func (p *PKI) Sign(claims map[string]any) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: p.signingKey, KeyID: keyID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", fmt.Errorf("make token signer: %w", err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

func (p *PKI) path(name string) string { return filepath.Join(p.dir, name) }

// load reads an existing PKI's signing key after checking that every file
// is there and the CA is not about to expire.
func (p *PKI) load() (*ecdsa.PrivateKey, error) {
	for _, name := range []string{caKeyName, serverCertName, serverKeyName, clientCertName, clientKeyName, jwksName, policyName} {
		if _, err := os.Stat(p.path(name)); err != nil {
			return nil, err
		}
	}
	ca, err := readCert(p.CAFile())
	if err != nil {
		return nil, err
	}
	if p.now().Add(24 * time.Hour).After(ca.NotAfter) {
		return nil, errors.New("ca expires within a day")
	}
	return readKey(p.path(signingKeyName))
}

func (p *PKI) create(hosts []string) error {
	caKey, err := newKey()
	if err != nil {
		return err
	}
	now := p.now()
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "spool dev CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, ca, err := issue(caTmpl, caTmpl, caKey, caKey)
	if err != nil {
		return fmt.Errorf("make ca: %w", err)
	}
	if err := writeCert(p.CAFile(), caDER); err != nil {
		return err
	}
	if err := writeKey(p.path(caKeyName), caKey); err != nil {
		return err
	}
	if err := p.issueLeaf(p.ServerCertFile(), p.ServerKeyFile(), serverTemplate(hosts), ca, caKey); err != nil {
		return err
	}
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: ClientName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := p.issueLeaf(p.ClientCertFile(), p.ClientKeyFile(), client, ca, caKey); err != nil {
		return err
	}
	if p.signingKey, err = newKey(); err != nil {
		return err
	}
	if err := writeKey(p.path(signingKeyName), p.signingKey); err != nil {
		return err
	}
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &p.signingKey.PublicKey, KeyID: keyID, Algorithm: string(jose.ES256), Use: "sig",
	}}}
	if err := writeJSON(p.JWKSFile(), jwks, 0o644); err != nil {
		return err
	}
	return writeJSON(p.PolicyFile(), policy(), 0o644)
}

// issueLeaf issues a certificate from tmpl, signed by the CA, with a new
// key, valid no longer than the CA, and writes both.
func (p *PKI) issueLeaf(certFile, keyFile string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	now := p.now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(validity)
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, _, err := issue(tmpl, ca, key, caKey)
	if err != nil {
		return fmt.Errorf("issue %s: %w", tmpl.Subject.CommonName, err)
	}
	if err := writeCert(certFile, der); err != nil {
		return err
	}
	return writeKey(keyFile, key)
}

// policy grants each role to a token whose roles claim names it, and admin
// to the client certificate. Its shape is the one platform/auth reads.
func policy() map[string]any {
	var bindings []map[string]any
	for _, role := range []string{"submitter", "viewer", "operator", "approver", "admin"} {
		bindings = append(bindings, map[string]any{"claim": "roles", "value": role, "roles": []string{role}})
	}
	bindings = append(bindings, map[string]any{"certificate": ClientName, "roles": []string{"admin"}})
	return map[string]any{"roles": rolePermissions, "bindings": bindings}
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func issue(tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return der, cert, nil
}

func writeCert(path string, der []byte) error {
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeJSON(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeFile(path, append(b, '\n'), mode)
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ECDSA key", path)
	}
	return key, nil
}
