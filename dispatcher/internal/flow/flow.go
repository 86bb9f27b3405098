// Package flow paces one dispatcher toward its destination. It puts the
// three flow-control parts together behind the two questions the delivery
// path asks, and the one answer it gives back:
//
//   - May I receive? The circuit breaker says no while the destination is
//     down, so that messages stay in the queue, where neither their receive
//     count nor their retry budget burns (Receive).
//   - May I send? A slot of the adaptive concurrency limit, then a slot of
//     the fleet-wide rate limit (Acquire): both are waited for before the
//     row is claimed in the ledger, so that no row waits while marked as
//     being sent.
//   - How did it go? The outcome of each send (deliver.Outcome) teaches the
//     concurrency limit and the breaker, each reading it its own way (the
//     function Acquire returns).
//
// Each part is optional: a nil Control, or one without a part, lets
// everything through, so tests and configurations without flow control
// need no special case.
package flow

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spoolhq/spool/dispatcher/internal/breaker"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/limit"
	"github.com/spoolhq/spool/dispatcher/internal/rate"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Control is one dispatcher's flow control. Any field may be nil.
type Control struct {
	Limit   *limit.Limiter
	Rate    *rate.Limiter
	Breaker *breaker.Breaker
	// RateWaited, when set, is told how long each delivery waited for the
	// fleet-wide rate (for metrics).
	RateWaited func(time.Duration)
}

// Receive waits until the breaker lets the dispatcher receive. probe says
// the breaker is half-open and this receive carries its one probe: take a
// single message, and report its outcome (or ReceivedNothing).
func (c *Control) Receive(ctx context.Context) (probe bool, err error) {
	if c == nil || c.Breaker == nil {
		return false, ctx.Err()
	}
	return c.Breaker.Wait(ctx)
}

// ReceivedNothing tells the breaker that a probe receive found no message,
// so another probe may go.
func (c *Control) ReceivedNothing() {
	if c != nil && c.Breaker != nil {
		c.Breaker.Record(deliver.NotSent)
	}
}

// slot is the right to send one request: one unit of the concurrency limit,
// and one of the fleet's rate.
type slot struct {
	c    *Control
	tok  *limit.Token
	once sync.Once
}

// Acquire waits for a concurrency slot, then for the fleet-wide rate's
// next slot: call it before claiming the row, after everything else that
// may wait, so that no row waits while marked as being sent. done returns
// the slot and tells the limit and the breaker how the send went, latency
// being the request's, from sending it to its answer (0 when none was
// sent); it must be called once, and later calls do nothing.
func (c *Control) Acquire(ctx context.Context) (done func(o deliver.Outcome, latency time.Duration), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &slot{c: c}
	if c == nil {
		return s.done, nil
	}
	if c.Limit != nil {
		tok, err := c.Limit.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		s.tok = tok
	}
	if c.Rate != nil && c.RateWaited != nil {
		start := time.Now()
		defer func() { c.RateWaited(time.Since(start)) }()
	}
	if err := c.Rate.Wait(ctx); err != nil {
		s.done(deliver.NotSent, 0)
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		s.done(deliver.NotSent, 0)
		return nil, err
	}
	return s.done, nil
}

func (s *slot) done(o deliver.Outcome, latency time.Duration) {
	s.once.Do(func() {
		if s.tok != nil {
			s.tok.Done(o, latency)
		}
		if s.c != nil && s.c.Breaker != nil {
			s.c.Breaker.Record(o)
		}
	})
}

// Status is the dispatcher's flow control for the status RPCs.
func (c *Control) Status() *spoolv1.FlowControl {
	f := &spoolv1.FlowControl{BreakerState: spoolv1.BreakerState_BREAKER_STATE_CLOSED}
	if c == nil {
		return f
	}
	if c.Limit != nil {
		st := c.Limit.Stats()
		f.ConcurrencyLimit, f.InFlight = int32(st.Limit), int32(st.InFlight)
		f.LatencyBaseline, f.LatencyRecent = durationpb.New(st.Baseline), durationpb.New(st.Recent)
	}
	f.RateLimit = c.Rate.Rate()
	if c.Breaker != nil {
		st := c.Breaker.Stats()
		f.BreakerState = breakerState(st.State)
		f.BreakerOpens = st.Opens
		f.BreakerOpenTime = durationpb.New(st.OpenTime)
	}
	return f
}

func breakerState(s breaker.State) spoolv1.BreakerState {
	switch s {
	case breaker.Open:
		return spoolv1.BreakerState_BREAKER_STATE_OPEN
	case breaker.HalfOpen:
		return spoolv1.BreakerState_BREAKER_STATE_HALF_OPEN
	}
	return spoolv1.BreakerState_BREAKER_STATE_CLOSED
}
