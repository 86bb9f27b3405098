package main

import (
	"log/slog"
	"net/url"

	"github.com/spoolhq/spool/dispatcher/internal/breaker"
	"github.com/spoolhq/spool/dispatcher/internal/flow"
	"github.com/spoolhq/spool/dispatcher/internal/limit"
	"github.com/spoolhq/spool/dispatcher/internal/rate"
)

// newFlow builds the dispatcher's flow control from its configuration:
// the adaptive concurrency limit (always, between -concurrency-min and
// -concurrency), the fleet's rate limit (when -rate-limit is set) and the
// circuit breaker (always).
func newFlow(cfg config, db rate.API, log *slog.Logger) *flow.Control {
	c := &flow.Control{
		Limit: limit.New(limit.Options{
			Min: cfg.concurrencyMin, Max: cfg.concurrency, Initial: min(cfg.concurrencyInitial, cfg.concurrency),
			EveryLossCuts: cfg.everyLossCuts,
		}),
		Breaker: breaker.New(breaker.Options{
			Failures: cfg.breakerFailures, FailureRate: cfg.breakerFailureRate,
			Cooldown: cfg.breakerCooldown, MaxCooldown: cfg.breakerMaxCooldown,
			// A probe is one delivery.
			ProbeTimeout: cfg.deliveryBound(),
			Log:          log,
		}),
	}
	if cfg.rateLimit > 0 {
		c.Rate = rate.New(db, cfg.table, rateKey(cfg), cfg.rateLimit, rate.Options{Burst: cfg.rateBurst})
	}
	return c
}

// rateKey names the shared rate limit: by default the destination's host,
// so dispatchers of different queues that post to one API share its limit.
func rateKey(cfg config) string {
	if cfg.rateKey != "" {
		return cfg.rateKey
	}
	if u, err := url.Parse(cfg.destinationURL); err == nil && u.Host != "" {
		return u.Host
	}
	return cfg.destinationURL
}
