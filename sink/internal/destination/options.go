package destination

import (
	"context"
	"log/slog"
	"time"
)

// Option configures a Server.
type Option func(*Server)

// WithLatency delays every transaction request by fixed plus a uniformly
// random extra in [0, jitter], before anything else happens to it.
func WithLatency(fixed, jitter time.Duration) Option {
	return func(s *Server) { s.latency, s.jitter = fixed, jitter }
}

// WithFailRate answers that share of transaction requests (0..1) with 503
// before applying them, as a destination that is briefly overloaded would.
func WithFailRate(p float64) Option {
	return func(s *Server) { s.failRate = p }
}

// DefaultHangFor is how long WithHang holds an answer unless told: far
// longer than any sensible client timeout.
const DefaultHangFor = 30 * time.Second

// WithHang makes the sink apply that share of transaction requests (0..1)
// and then hold the answer for d (DefaultHangFor when d is 0), as a
// destination that committed a payment and then stalled would. The client
// times out first and cannot know the payment went through. When the client
// goes away the response is aborted; when it waited, it gets a 200.
func WithHang(p float64, d time.Duration) Option {
	return func(s *Server) {
		s.hangRate, s.hangFor = p, d
		if d == 0 {
			s.hangFor = DefaultHangFor
		}
	}
}

// WithReset makes the sink apply that share of transaction requests (0..1)
// and then reset the TCP connection (SO_LINGER 0) instead of answering. A
// client sees a connection reset after its request was written; Go's
// net/http replays such a request on its own when it carries an idempotency
// header and the connection was reused, which is exactly the hazard a
// client under a never-resend policy must guard against. Shares of WithHang
// and WithReset together must not exceed 1: one draw decides both.
func WithReset(p float64) Option {
	return func(s *Server) { s.resetRate = p }
}

// WithHonourKey makes the sink behave like a destination that honours the
// idempotency header: a request whose key was already applied is answered
// 200 without applying it again, and counted as deduplicated. Without it,
// such a request is applied again and counted as a duplicate.
func WithHonourKey(on bool) Option {
	return func(s *Server) { s.honourKey = on }
}

// WithRejectEvery answers 422 to every request for a row that is a
// multiple of n (n ≤ 0: none), before applying: a deterministic share of
// rows (1/n) the destination refuses for good, which tests can name.
func WithRejectEvery(n int64) Option {
	return func(s *Server) { s.rejectEvery = n }
}

// WithRateLimit answers 429 with Retry-After: 1 to a transaction request
// when perSecond requests were already admitted in the last second (a
// sliding window); 0 is no limit.
func WithRateLimit(perSecond int) Option {
	return func(s *Server) { s.rateLimit = perSecond }
}

// WithClock replaces time.Now for the rate limit and playing down.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// WithIdempotencyHeader names the header that carries a transaction's key.
func WithIdempotencyHeader(name string) Option {
	return func(s *Server) { s.header = name }
}

// WithRand sets the random source; tests pass a seeded one.
func WithRand(r Rand) Option {
	return func(s *Server) { s.rand = r }
}

// WithSleep replaces the wait used for latency, so tests need not wait.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(s *Server) { s.sleep = sleep }
}

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) { s.log = l }
}
