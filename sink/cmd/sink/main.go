// Command sink is a stand-in for the third-party API Spool delivers to. It
// accepts transactions (JSON bodies carrying spool_job_id and spool_row),
// can be slow or fail on purpose, can apply a transaction and then stall or
// drop the connection (so the caller cannot know it went through), may
// honour the idempotency key, and reports how many times it applied each
// transaction so demos and tests can prove none was lost or paid twice.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spoolhq/spool/platform/envcfg"
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
	return c, nil
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
	handler := destination.New(ledger.New(),
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
	)

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
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	log.InfoContext(ctx, "sink listening", "addr", lis.Addr().String(), "latency", c.latency.String(), "latency_jitter", c.jitter.String(),
		"fail_rate", c.failRate, "hang_rate", c.hangRate, "hang_for", c.hangFor.String(), "reset_rate", c.resetRate,
		"honour_key", c.honourKey, "seed", seed, "idempotency_header", c.idempotencyHeader,
		"reject_every", c.rejectEvery, "rate_limit", c.rateLimit)
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
	if err := srv.Shutdown(sctx); err != nil {
		// Requests still running past the grace are cut off.
		log.WarnContext(ctx, "graceful shutdown timed out; closing connections", "error", err)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	}
	return nil
}
