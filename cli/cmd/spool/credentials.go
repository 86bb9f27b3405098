package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// transportOptions returns how the CLI reaches the services, from the
// environment: SPOOL_CA_FILE (the CA to trust), SPOOL_TOKEN or
// SPOOL_TOKEN_FILE (a bearer token sent with every call), and
// SPOOL_CLIENT_CERT_FILE with SPOOL_CLIENT_KEY_FILE (a client certificate).
// With none of them set it speaks plaintext, to a service run with
// SPOOL_INSECURE=true.
func transportOptions(lookup func(string) (string, bool)) ([]grpc.DialOption, error) {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	caFile, token, tokenFile := get("SPOOL_CA_FILE"), get("SPOOL_TOKEN"), get("SPOOL_TOKEN_FILE")
	certFile, keyFile := get("SPOOL_CLIENT_CERT_FILE"), get("SPOOL_CLIENT_KEY_FILE")
	if caFile == "" && token == "" && tokenFile == "" && certFile == "" && keyFile == "" {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	if token != "" && tokenFile != "" {
		return nil, errors.New("set SPOOL_TOKEN or SPOOL_TOKEN_FILE, not both")
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read SPOOL_TOKEN_FILE: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read SPOOL_CA_FILE: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("SPOOL_CA_FILE %s: no PEM certificate", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("set both SPOOL_CLIENT_CERT_FILE and SPOOL_CLIENT_KEY_FILE, or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	return opts, nil
}

// bearer sends a token as "authorization: Bearer …" on every call, and
// only over TLS.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
