// Package clientauth is how Spool's clients (the spool CLI, the container
// probe, tests) reach a server that asks who is calling: which certificate
// authority to trust, which bearer token to send with every call, and,
// optionally, which client certificate to present. It reads the variables
// every client shares:
//
//	SPOOL_CA_FILE            PEM bundle of the CA that signed the servers' certificates
//	SPOOL_TOKEN              bearer token sent as "authorization: Bearer …" on every call
//	SPOOL_TOKEN_FILE         file holding the token, read again on every call (rotation)
//	SPOOL_CLIENT_CERT_FILE   client certificate for mutual TLS (with SPOOL_CLIENT_KEY_FILE)
//	SPOOL_CLIENT_KEY_FILE    its private key
//	SPOOL_TLS_SERVER_NAME    the name the server's certificate must carry, when
//	                         the address dialled is not one of its names
//
// A client speaks plaintext only when none of them is set: a credential is
// never sent without TLS. With a token or a client certificate but no CA
// file, the system's roots are trusted (a server behind a load balancer with
// a public certificate).
package clientauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spoolhq/spool/platform/pemfile"
)

// The variables Config reads.
const (
	EnvCAFile     = "SPOOL_CA_FILE"
	EnvToken      = "SPOOL_TOKEN"
	EnvTokenFile  = "SPOOL_TOKEN_FILE"
	EnvClientCert = "SPOOL_CLIENT_CERT_FILE"
	EnvClientKey  = "SPOOL_CLIENT_KEY_FILE"
	EnvServerName = "SPOOL_TLS_SERVER_NAME"
)

// Config is what a client trusts and presents.
type Config struct {
	// CAFile is the PEM bundle of the servers' CA; empty means the
	// system's roots (when TLS is on at all).
	CAFile string
	// Token is the bearer token; TokenFile names a file that holds it.
	// At most one of them is set.
	Token, TokenFile string
	// CertFile and KeyFile are the client certificate for mutual TLS.
	CertFile, KeyFile string
	// ServerName overrides the name the server's certificate must carry;
	// empty means the host of the address dialled.
	ServerName string
}

// FromEnv reads a Config from the variables above through lookup.
func FromEnv(lookup func(string) (string, bool)) Config {
	get := func(k string) string {
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	return Config{
		CAFile:     get(EnvCAFile),
		Token:      get(EnvToken),
		TokenFile:  get(EnvTokenFile),
		CertFile:   get(EnvClientCert),
		KeyFile:    get(EnvClientKey),
		ServerName: get(EnvServerName),
	}
}

// TLS reports whether a client with c speaks TLS.
func (c Config) TLS() bool {
	return c.CAFile != "" || c.Token != "" || c.TokenFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// Validate reports every inconsistency of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Token != "" && c.TokenFile != "" {
		errs = append(errs, fmt.Errorf("set %s or %s, not both", EnvToken, EnvTokenFile))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, fmt.Errorf("%s and %s go together", EnvClientCert, EnvClientKey))
	}
	return errors.Join(errs...)
}

// TLSConfig returns the TLS configuration c describes: its CA (or the
// system's roots) and its client certificate. It fails when a file cannot
// be read or holds no certificate.
func (c Config) TLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := pemfile.CertPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", EnvCAFile, err)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate (%s, %s): %w", EnvClientCert, EnvClientKey, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// DialOptions returns the transport credentials and per-call credentials
// of c, to pass to grpc.NewClient.
func (c Config) DialOptions() ([]grpc.DialOption, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.TLS() {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	cfg, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if c.Token != "" || c.TokenFile != "" {
		if c.TokenFile != "" {
			// Fail now, not on the first call, when the file is not there.
			if _, err := readToken(c.TokenFile); err != nil {
				return nil, err
			}
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: c.Token, file: c.TokenFile}))
	}
	return opts, nil
}

// bearer sends a token with every call. A token file is read on every
// call, so a token refreshed on disk is picked up by a long-running client.
type bearer struct {
	token, file string
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok := b.token
	if b.file != "" {
		var err error
		if tok, err = readToken(b.file); err != nil {
			return nil, err
		}
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity keeps gRPC from ever sending the token over a
// plaintext connection.
func (bearer) RequireTransportSecurity() bool { return true }

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", EnvTokenFile, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s %s is empty", EnvTokenFile, path)
	}
	return tok, nil
}
