// Command sink is a stand-in for the third-party API Spool delivers to. It
// accepts transactions (JSON bodies carrying spool_job_id and spool_row),
// can be slow or fail on purpose, can apply a transaction and then stall or
// drop the connection (so the caller cannot know it went through), may
// honour the idempotency key, and reports how many times it applied each
// transaction so demos and tests can prove none was lost or paid twice.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spoolhq/spool/platform/envcfg"
	"github.com/spoolhq/spool/platform/pemfile"
	"github.com/spoolhq/spool/sink/internal/destination"
	"github.com/spoolhq/spool/sink/internal/ledger"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
}

// shutdownGrace bounds how long in-flight requests may finish after a
// signal; a request made to hang on purpose must not hold the process.
const shutdownGrace = 5 * time.Second

type config struct {
	listen            string
	latency, jitter   time.Duration
	failRate          float64
	hangRate          float64
	hangFor           time.Duration
	resetRate         float64
	honourKey         bool
	seed              uint64
	idempotencyHeader string
	logLevel          slog.Level
	rejectEvery       int64
	rateLimit         int

	// Authentication the sink requires (see destination's auth.go).
	httpsListen, certFile, keyFile, clientCAFile string
	oauthClientID, oauthClientSecret             string
	oauthTokenTTL, oauthAdvertisedTTL            time.Duration
	signingSecrets                               string
}

func parse(args []string, stderr io.Writer, lookup func(string) (string, bool)) (config, error) {
	var c config
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", ":8080", "address to serve HTTP on")
	fs.DurationVar(&c.latency, "latency", 0, "fixed delay added to every transaction request")
	fs.DurationVar(&c.jitter, "latency-jitter", 0, "uniformly random extra delay, up to this much")
	fs.Float64Var(&c.failRate, "fail-rate", 0, "share of transaction requests (0..1) answered 503 before applying")
	fs.Float64Var(&c.hangRate, "hang-rate", 0, "share of transaction requests (0..1) applied, then answered only after -hang-for (aborted when the client gives up first)")
	fs.DurationVar(&c.hangFor, "hang-for", destination.DefaultHangFor, "how long a request picked by -hang-rate is held after being applied")
	fs.Float64Var(&c.resetRate, "reset-rate", 0, "share of transaction requests (0..1) applied, then answered with a TCP reset")
	fs.BoolVar(&c.honourKey, "honour-key", false, "apply each idempotency key once; a key seen again is answered 200 and counted as deduplicated")
	fs.Uint64Var(&c.seed, "seed", 0, "seed of the random source; 0 seeds from the clock")
	fs.StringVar(&c.idempotencyHeader, "idempotency-header", destination.DefaultIdempotencyHeader, "header that carries the transaction key")
	fs.Int64Var(&c.rejectEvery, "reject-every", 0, "answer 422 to every request for a row that is a multiple of this (50: 2 % of rows, the same ones every run); 0 = none")
	fs.IntVar(&c.rateLimit, "rate-limit", 0, "answer 429 with Retry-After: 1 above this many requests per second (sliding 1s window); 0 = no limit")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.StringVar(&c.httpsListen, "https-listen", "", "address to serve HTTPS on too (with -https-cert-file and -https-key-file); off when empty")
	fs.StringVar(&c.certFile, "https-cert-file", "", "PEM server certificate of the HTTPS listener")
	fs.StringVar(&c.keyFile, "https-key-file", "", "PEM key of the server certificate")
	fs.StringVar(&c.clientCAFile, "https-client-ca-file", "", "PEM CA bundle: require mutual TLS, with a client certificate it signed; transactions on the plain listener are then refused (403)")
	fs.StringVar(&c.oauthClientID, "oauth2-client-id", "", "require OAuth2: serve POST /oauth2/token (client credentials) for this client, and refuse transactions without a valid token (401)")
	fs.StringVar(&c.oauthClientSecret, "oauth2-client-secret", "", "the OAuth2 client's secret")
	fs.DurationVar(&c.oauthTokenTTL, "oauth2-token-ttl", time.Minute, "how long an issued token is accepted")
	fs.DurationVar(&c.oauthAdvertisedTTL, "oauth2-advertised-ttl", 0, "expires_in told to clients; longer than -oauth2-token-ttl makes them send expired tokens, as a server that revokes early does; 0 = the real lifetime")
	fs.StringVar(&c.signingSecrets, "signing-secrets", "", "require Standard Webhooks signatures made with one of these secrets (whsec_..., space-separated); POST /admin/signing-secrets replaces them at runtime")
	if err := envcfg.Parse(fs, args, lookup); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"-fail-rate", c.failRate}, {"-hang-rate", c.hangRate}, {"-reset-rate", c.resetRate}} {
		if r.v < 0 || r.v > 1 {
			return c, fmt.Errorf("%s %v: want a share between 0 and 1", r.name, r.v)
		}
	}
	if c.hangRate+c.resetRate > 1 {
		return c, fmt.Errorf("-hang-rate %v and -reset-rate %v add up to more than 1", c.hangRate, c.resetRate)
	}
	if c.rejectEvery < 0 || c.rateLimit < 0 {
		return c, errors.New("-reject-every and -rate-limit cannot be negative")
	}
	if c.latency < 0 || c.jitter < 0 || c.hangFor < 0 {
		return c, errors.New("-latency, -latency-jitter and -hang-for cannot be negative")
	}
	if c.idempotencyHeader == "" {
		return c, errors.New("-idempotency-header cannot be empty")
	}
	if (c.httpsListen != "") != (c.certFile != "" && c.keyFile != "") || (c.clientCAFile != "" && c.httpsListen == "") {
		return c, errors.New("-https-listen needs -https-cert-file and -https-key-file, and they (and -https-client-ca-file) need -https-listen")
	}
	if (c.oauthClientID == "") != (c.oauthClientSecret == "") || c.oauthTokenTTL <= 0 || c.oauthAdvertisedTTL < 0 {
		return c, errors.New("-oauth2-client-id and -oauth2-client-secret go together, with -oauth2-token-ttl above 0")
	}
	if c.signingSecrets != "" {
		if err := destination.ParseSecrets(strings.Fields(c.signingSecrets)); err != nil {
			return c, fmt.Errorf("-signing-secrets: %w", err)
		}
	}
	return c, nil
}

// authOptions are the sink's required authentication, and the TLS of its
// HTTPS listener (nil without one).
func (c config) authOptions() ([]destination.Option, *tls.Config, error) {
	var opts []destination.Option
	if c.oauthClientID != "" {
		opts = append(opts, destination.WithOAuth2(c.oauthClientID, c.oauthClientSecret, c.oauthTokenTTL, c.oauthAdvertisedTTL))
	}
	if c.signingSecrets != "" {
		opts = append(opts, destination.WithSignatures(strings.Fields(c.signingSecrets)))
	}
	if c.httpsListen == "" {
		return opts, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("load the HTTPS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.clientCAFile != "" {
		if cfg.ClientCAs, err = pemfile.CertPool(c.clientCAFile); err != nil {
			return nil, nil, fmt.Errorf("-https-client-ca-file: %w", err)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		opts = append(opts, destination.WithClientCert())
	}
	return opts, cfg, nil
}

// run serves until ctx ends, then shuts down within shutdownGrace.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parse(args, stderr, nil)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: c.logLevel}))
	seed := c.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	authOpts, tlsCfg, err := c.authOptions()
	if err != nil {
		return err
	}
	handler := destination.New(ledger.New(), append(authOpts,
		destination.WithLatency(c.latency, c.jitter),
		destination.WithFailRate(c.failRate),
		destination.WithHang(c.hangRate, c.hangFor),
		destination.WithReset(c.resetRate),
		destination.WithHonourKey(c.honourKey),
		destination.WithIdempotencyHeader(c.idempotencyHeader),
		destination.WithRejectEvery(c.rejectEvery),
		destination.WithRateLimit(c.rateLimit),
		destination.WithRand(destination.NewRand(seed)),
		destination.WithLogger(log),
	)...)

	lis, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.listen, err)
	}
	// Requests run under a context that ends when shutdown starts, so a
	// request held on purpose (-hang-for, -latency) is aborted at once
	// instead of holding the process for the whole grace.
	reqCtx, stopRequests := context.WithCancel(context.Background())
	defer stopRequests()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(lis) }()
	var tlsSrv *http.Server
	if tlsCfg != nil {
		tlsLis, err := net.Listen("tcp", c.httpsListen)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("listen on %s: %w", c.httpsListen, err)
		}
		tlsSrv = &http.Server{Handler: handler, ReadHeaderTimeout: srv.ReadHeaderTimeout, ErrorLog: srv.ErrorLog, BaseContext: srv.BaseContext, TLSConfig: tlsCfg}
		go func() { errc <- tlsSrv.ServeTLS(tlsLis, "", "") }()
		log.InfoContext(ctx, "sink listening on HTTPS", "addr", tlsLis.Addr().String(), "mutual_tls", c.clientCAFile != "")
		fmt.Fprintf(stdout, "sink listening on https://%s\n", tlsLis.Addr())
	}
	log.InfoContext(ctx, "sink listening", "addr", lis.Addr().String(), "latency", c.latency.String(), "latency_jitter", c.jitter.String(),
		"fail_rate", c.failRate, "hang_rate", c.hangRate, "hang_for", c.hangFor.String(), "reset_rate", c.resetRate,
		"honour_key", c.honourKey, "seed", seed, "idempotency_header", c.idempotencyHeader,
		"reject_every", c.rejectEvery, "rate_limit", c.rateLimit,
		"oauth2", c.oauthClientID != "", "oauth2_token_ttl", c.oauthTokenTTL.String(), "signatures", c.signingSecrets != "")
	fmt.Fprintf(stdout, "sink listening on http://%s\n", lis.Addr())

	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	log.InfoContext(ctx, "sink shutting down", "grace", shutdownGrace.String())
	stopRequests()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	servers := []*http.Server{srv}
	if tlsSrv != nil {
		servers = append(servers, tlsSrv)
	}
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			// Requests still running past the grace are cut off.
			log.WarnContext(ctx, "graceful shutdown timed out; closing connections", "error", err)
			_ = s.Close()
		}
	}
	for range servers {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	}
	return nil
}
