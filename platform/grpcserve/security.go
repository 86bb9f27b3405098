package grpcserve

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/pemfile"
)

// SecurityFlags are the TLS and authentication settings every server
// takes. They are flags (with SPOOL_* environment fallbacks through
// envcfg), the same on the ingestor and the dispatcher.
type SecurityFlags struct {
	CertFile, KeyFile, ClientCAFile string
	PolicyFile                      string
	JWKSFile, JWKSURL               string
	Issuer, Audience                string
	TokenCacheTTL                   time.Duration
	TokenCacheSize                  int
	Reflection                      bool
	Insecure                        bool
}

// Register adds the settings to fs.
func (f *SecurityFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.CertFile, "tls-cert-file", "", "PEM `file` of the server's TLS certificate (chain)")
	fs.StringVar(&f.KeyFile, "tls-key-file", "", "PEM `file` of the server's TLS private key")
	fs.StringVar(&f.ClientCAFile, "tls-client-ca-file", "", "PEM `file` of CAs whose client certificates are accepted (mutual TLS; the certificate's common name is the caller); none when empty")
	fs.StringVar(&f.PolicyFile, "auth-policy-file", "", "JSON `file` binding callers to roles and roles to permissions")
	fs.StringVar(&f.JWKSFile, "auth-jwks-file", "", "JWKS `file` of the keys that sign bearer tokens")
	fs.StringVar(&f.JWKSURL, "auth-jwks-url", "", "URL of the JWKS of the keys that sign bearer tokens (fetched again every 10 minutes)")
	fs.StringVar(&f.Issuer, "auth-issuer", "", "iss a bearer token must carry")
	fs.StringVar(&f.Audience, "auth-audience", "", "aud a bearer token must carry")
	fs.DurationVar(&f.TokenCacheTTL, "auth-token-cache-ttl", time.Minute, "how long a verified bearer token is accepted again without checking its signature (never past its exp; bounds how long a removed signing key is still honoured); 0 checks every call")
	fs.IntVar(&f.TokenCacheSize, "auth-token-cache-size", 10_000, "most verified bearer tokens remembered (least recently used dropped first)")
	fs.BoolVar(&f.Reflection, "grpc-reflection", false, "serve gRPC reflection (for grpcurl)")
	fs.BoolVar(&f.Insecure, "insecure", false, "serve plaintext without authentication (local experiments only)")
}

// Check reports every missing or contradictory setting at once, naming the
// environment variables, so a service without security settings refuses
// to start instead of serving plaintext.
func (f *SecurityFlags) Check() error {
	if f.Insecure {
		if f.CertFile != "" || f.KeyFile != "" || f.ClientCAFile != "" || f.PolicyFile != "" || f.JWKSFile != "" || f.JWKSURL != "" {
			return errors.New("SPOOL_INSECURE=true serves plaintext without authentication; unset it or the TLS and auth settings (SPOOL_TLS_*, SPOOL_AUTH_*)")
		}
		return nil
	}
	var errs []error
	if f.CertFile == "" || f.KeyFile == "" {
		errs = append(errs, errors.New("TLS is required: set SPOOL_TLS_CERT_FILE and SPOOL_TLS_KEY_FILE (-tls-cert-file, -tls-key-file), or SPOOL_INSECURE=true to serve plaintext without authentication"))
	}
	if f.PolicyFile == "" {
		errs = append(errs, errors.New("authentication is required: set SPOOL_AUTH_POLICY_FILE (-auth-policy-file)"))
	}
	tokens := f.JWKSFile != "" || f.JWKSURL != ""
	switch {
	case f.JWKSFile != "" && f.JWKSURL != "":
		errs = append(errs, errors.New("set SPOOL_AUTH_JWKS_FILE or SPOOL_AUTH_JWKS_URL, not both"))
	case !tokens && f.ClientCAFile == "":
		errs = append(errs, errors.New("callers need a way to prove who they are: set SPOOL_AUTH_JWKS_FILE or SPOOL_AUTH_JWKS_URL (bearer tokens), or SPOOL_TLS_CLIENT_CA_FILE (client certificates)"))
	}
	if tokens && (f.Issuer == "" || f.Audience == "") {
		errs = append(errs, errors.New("bearer tokens need SPOOL_AUTH_ISSUER and SPOOL_AUTH_AUDIENCE"))
	}
	if f.TokenCacheTTL < 0 || f.TokenCacheSize < 0 {
		errs = append(errs, errors.New("SPOOL_AUTH_TOKEN_CACHE_TTL and SPOOL_AUTH_TOKEN_CACHE_SIZE cannot be negative"))
	}
	return errors.Join(errs...)
}

// Security is what a server needs to serve its callers: transport
// credentials and the authenticator, or neither when running insecure.
type Security struct {
	// Auth is nil only for an insecure server.
	Auth       *auth.Authenticator
	Reflection bool
	creds      credentials.TransportCredentials
}

// ServerOptions returns the transport credentials as server options.
func (s Security) ServerOptions() []grpc.ServerOption {
	if s.creds == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(s.creds)}
}

// Load reads the files the flags name and builds the server's security,
// with rules saying which permission each of the service's methods needs.
// Insecure mode is logged as a warning at every start.
func (f *SecurityFlags) Load(ctx context.Context, log *slog.Logger, rules auth.Rules) (Security, error) {
	if err := f.Check(); err != nil {
		return Security{}, err
	}
	if f.Insecure {
		log.WarnContext(ctx, "serving plaintext without authentication: anyone who reaches the port may call every method", "setting", "SPOOL_INSECURE=true")
		return Security{Reflection: f.Reflection}, nil
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return Security{}, fmt.Errorf("load TLS certificate (SPOOL_TLS_CERT_FILE, SPOOL_TLS_KEY_FILE): %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCAFile != "" {
		pool, err := pemfile.CertPool(f.ClientCAFile)
		if err != nil {
			return Security{}, fmt.Errorf("client CA (SPOOL_TLS_CLIENT_CA_FILE): %w", err)
		}
		// A certificate is optional: callers with a bearer token need none.
		// One that is given must verify.
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	policy, err := auth.LoadPolicy(f.PolicyFile)
	if err != nil {
		return Security{}, fmt.Errorf("%w (SPOOL_AUTH_POLICY_FILE)", err)
	}
	var tokens *auth.TokenVerifier
	if f.JWKSFile != "" || f.JWKSURL != "" {
		tokens, err = auth.NewTokenVerifier(ctx, auth.TokenConfig{
			JWKSFile: f.JWKSFile, JWKSURL: f.JWKSURL, Issuer: f.Issuer, Audience: f.Audience,
			CacheTTL: f.TokenCacheTTL, CacheSize: f.TokenCacheSize,
		})
		if err != nil {
			return Security{}, fmt.Errorf("%w (SPOOL_AUTH_JWKS_FILE or SPOOL_AUTH_JWKS_URL)", err)
		}
	}
	return Security{
		Auth:       auth.NewAuthenticator(tokens, policy, rules, log),
		Reflection: f.Reflection,
		creds:      credentials.NewTLS(cfg),
	}, nil
}
