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

// heldMessages is how many messages a dispatcher holds at most by default:
// twice its concurrency. A message is held from the receive that brings it
// to the call that settles it, and only part of that time is its request
// to the destination: the receive, the ledger's claim and outcome writes
// and the delete or postponement take the rest. With as many messages as
// requests the limit can allow, those steps hold the requests in flight
// below the limit whatever the destination answers (measured on a loaded
// machine: 12 to 15 of 16 in flight while the limit stayed at 16), and the
// concurrency limit never gets to bound them. Twice as many leaves room
// for steps as long as the request itself; the extra messages wait for a
// slot of the limit, their visibility kept by the heartbeat.
func heldMessages(concurrency int) int {
	return 2 * concurrency
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
