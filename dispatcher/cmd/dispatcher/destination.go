package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/platform/envcfg"
)

// destAuth is how the dispatcher proves itself to the destination and
// protects what it sends: TLS trust and client certificate, OAuth2 client
// credentials, request signatures, headers kept in a file.
//
// Every secret comes from an environment variable or from a file named by
// the same variable with _FILE appended (ECS injects Secrets Manager values
// as either), never from a flag, which a process listing shows. Secrets are
// read once at start, and no error, log line or status names their values.
type destAuth struct {
	allowInsecure bool
	minTLS        string
	caFile        string
	certFile      string
	keyFile       string

	tokenURL         string
	clientID         string
	scopes           string
	clientSecretFile string

	signingSecretsFile string
	headerFile         string

	// Loaded from the settings above by load.
	tls          *tls.Config
	clientSecret string
	signer       *deliver.Signer
	fileHeaders  headerList
}

// Environment variables holding secrets themselves; each may instead name
// a file in its _FILE twin, which is also a flag.
const (
	envCA             = "SPOOL_DESTINATION_CA"
	envClientCert     = "SPOOL_DESTINATION_CLIENT_CERT"
	envClientKey      = "SPOOL_DESTINATION_CLIENT_KEY"
	envClientSecret   = "SPOOL_DESTINATION_OAUTH2_CLIENT_SECRET"
	envSigningSecrets = "SPOOL_DESTINATION_SIGNING_SECRETS"
)

var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

func (a *destAuth) flags(fs *flag.FlagSet) {
	fs.BoolVar(&a.allowInsecure, "allow-insecure-destination", false, "allow http:// destination and token URLs (a local stand-in); otherwise refused, as plaintext carries payroll data and credentials")
	fs.StringVar(&a.minTLS, "destination-tls-min-version", "1.2", "lowest TLS version spoken to the destination and its token endpoint: 1.2 or 1.3")
	fs.StringVar(&a.caFile, "destination-ca-file", "", "PEM bundle of CAs trusted for the destination besides the system's (or the PEM itself in $"+envCA+")")
	fs.StringVar(&a.certFile, "destination-client-cert-file", "", "PEM client certificate (chain) for mutual TLS with the destination (or the PEM in $"+envClientCert+")")
	fs.StringVar(&a.keyFile, "destination-client-key-file", "", "PEM private key of the client certificate (or the PEM in $"+envClientKey+")")
	fs.StringVar(&a.tokenURL, "destination-oauth2-token-url", "", "OAuth2 token endpoint: every request carries a client-credentials bearer token; off when empty")
	fs.StringVar(&a.clientID, "destination-oauth2-client-id", "", "OAuth2 client id")
	fs.StringVar(&a.scopes, "destination-oauth2-scopes", "", "OAuth2 scopes asked for, comma- or space-separated")
	fs.StringVar(&a.clientSecretFile, "destination-oauth2-client-secret-file", "", "file holding the OAuth2 client secret (or the secret in $"+envClientSecret+")")
	fs.StringVar(&a.signingSecretsFile, "destination-signing-secrets-file", "", "file holding one or two Standard Webhooks secrets (whsec_...), space- or line-separated, to sign every request with (or the secrets in $"+envSigningSecrets+"); off when neither is set")
	fs.StringVar(&a.headerFile, "destination-header-file", "", `file of headers added to every POST, "Name: value" per line, for values that are credentials; added to -destination-header's`)
}

// load checks the settings and reads the secrets and certificates; the
// destination URL and headers are the rest of the configuration.
func (a *destAuth) load(destURL string, headers http.Header, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	a.checkScheme("destination-url", destURL, fail)

	minTLS, ok := tlsVersions[a.minTLS]
	if !ok {
		fail(fmt.Errorf("-destination-tls-min-version %q: want 1.2 or 1.3", a.minTLS))
	}
	a.tls = &tls.Config{MinVersion: minTLS}
	if ca, ok, err := setting(lookup, envCA, "destination-ca-file", a.caFile); err != nil {
		fail(err)
	} else if ok {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(ca)) {
			fail(errors.New("destination CA bundle: no PEM certificate in it"))
		}
		a.tls.RootCAs = pool
	}
	cert, hasCert, certErr := setting(lookup, envClientCert, "destination-client-cert-file", a.certFile)
	key, hasKey, keyErr := setting(lookup, envClientKey, "destination-client-key-file", a.keyFile)
	switch {
	case certErr != nil || keyErr != nil:
		fail(errors.Join(certErr, keyErr))
	case hasCert != hasKey:
		fail(errors.New("destination client certificate and key: set both or neither"))
	case hasCert:
		pair, err := tls.X509KeyPair([]byte(cert), []byte(key))
		if err != nil {
			// The parser's errors describe the PEM blocks' kinds, not their
			// contents.
			fail(fmt.Errorf("destination client certificate and key: %w", err))
		} else {
			a.tls.Certificates = []tls.Certificate{pair}
		}
	}

	secret, hasSecret, err := setting(lookup, envClientSecret, "destination-oauth2-client-secret-file", a.clientSecretFile)
	if err != nil {
		fail(err)
	}
	a.clientSecret = strings.TrimSpace(secret)
	switch {
	case a.tokenURL == "" && (a.clientID != "" || hasSecret || a.scopes != ""):
		fail(errors.New("OAuth2 client id, secret or scopes given without -destination-oauth2-token-url"))
	case a.tokenURL != "":
		a.checkScheme("destination-oauth2-token-url", a.tokenURL, fail)
		if a.clientID == "" || a.clientSecret == "" {
			fail(fmt.Errorf("-destination-oauth2-token-url needs -destination-oauth2-client-id and the secret in $%s or $%s_FILE", envClientSecret, envClientSecret))
		}
	}

	if secrets, ok, err := setting(lookup, envSigningSecrets, "destination-signing-secrets-file", a.signingSecretsFile); err != nil {
		fail(err)
	} else if ok {
		if a.signer, err = deliver.NewSigner(strings.Fields(secrets)...); err != nil {
			fail(fmt.Errorf("$%s: %w", envSigningSecrets, err))
		}
	}

	if a.headerFile != "" {
		if lines, err := os.ReadFile(a.headerFile); err != nil {
			fail(fmt.Errorf("-destination-header-file: %w", err))
		} else if err := a.fileHeaders.Set(string(lines)); err != nil {
			fail(fmt.Errorf("-destination-header-file: %w", err))
		}
	}
	if a.tokenURL != "" && a.header(headers).Get("Authorization") != "" {
		fail(errors.New("-destination-oauth2-token-url and an Authorization destination header: the token would replace the header; keep one"))
	}
	return errors.Join(errs...)
}

// checkScheme refuses a plaintext URL unless allowed.
func (a *destAuth) checkScheme(flagName, raw string, fail func(error)) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The URL is named redacted: its query may hold a credential.
		fail(fmt.Errorf("-%s %s: want an http(s) URL", flagName, deliver.RedactURL(raw)))
		return
	}
	if u.Scheme == "http" && !a.allowInsecure {
		fail(fmt.Errorf("-%s %s: plaintext http would carry payroll data and credentials in clear; use https, or set -allow-insecure-destination ($%s=true) for a local stand-in",
			flagName, deliver.RedactURL(raw), envcfg.EnvName("allow-insecure-destination")))
	}
}

// setting returns a value given in the environment variable env, or in the
// file named by the flag flagName (whose fallback is env_FILE). ok is false
// when neither is set. Errors name the variable and the file, never the
// value.
func setting(lookup func(string) (string, bool), env, flagName, file string) (value string, ok bool, err error) {
	v, inEnv := lookup(env)
	switch {
	case inEnv && file != "":
		return "", false, fmt.Errorf("$%s and -%s ($%s_FILE) both set: keep one", env, flagName, env)
	case inEnv:
		return v, true, nil
	case file == "":
		return "", false, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", false, fmt.Errorf("-%s: %w", flagName, err)
	}
	return string(b), true, nil
}

// header is every header sent, the flag's and the file's.
func (a *destAuth) header(flagged http.Header) http.Header {
	h := flagged.Clone()
	if h == nil {
		h = http.Header{}
	}
	for k, vs := range a.fileHeaders.h {
		h[k] = append(h[k], vs...)
	}
	return h
}

// describe names the mechanisms on, for the start-up log.
func (a *destAuth) describe() string {
	var on []string
	if len(a.tls.Certificates) > 0 {
		on = append(on, "mtls")
	}
	if a.tokenURL != "" {
		on = append(on, "oauth2")
	}
	if a.signer != nil {
		on = append(on, "signed")
	}
	if len(on) == 0 {
		return "none"
	}
	return strings.Join(on, ",")
}

// options adds the destination's TLS, tokens and signer to o.
func (a *destAuth) options(o deliver.Options) deliver.Options {
	o.TLS = a.tls
	o.Signer = a.signer
	if a.tokenURL != "" {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = a.tls.Clone()
		o.Tokens = deliver.NewOAuth2(deliver.OAuth2Options{
			TokenURL: a.tokenURL, ClientID: a.clientID, ClientSecret: a.clientSecret,
			Scopes:     strings.FieldsFunc(a.scopes, func(r rune) bool { return r == ',' || r == ' ' }),
			HTTPClient: &http.Client{Transport: t, Timeout: o.Timeout},
		})
	}
	o.Header = a.header(o.Header)
	return o
}
