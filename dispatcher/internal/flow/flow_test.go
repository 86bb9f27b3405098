package flow_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/breaker"
	"github.com/spoolhq/spool/dispatcher/internal/flow"
	"github.com/spoolhq/spool/dispatcher/internal/limit"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestNilControlLetsEverythingThrough(t *testing.T) {
	ctx := context.Background()
	for _, c := range []*flow.Control{nil, {}} {
		probe, err := c.Receive(ctx)
		require.NoError(t, err)
		require.False(t, probe)
		s, err := c.Acquire(ctx)
		require.NoError(t, err)
		s.Done(flow.Overloaded, time.Millisecond)
		s.Done(flow.Overloaded, time.Millisecond)
		st := c.Status()
		require.Equal(t, spoolv1.BreakerState_BREAKER_STATE_CLOSED, st.GetBreakerState())
		require.Zero(t, st.GetRateLimit())
	}
}

// TestOutcomesTeachTheBreaker sends outcomes through slots and checks
// which of them count as the destination failing.
func TestOutcomesTeachTheBreaker(t *testing.T) {
	tests := []struct {
		outcomes []flow.Outcome
		open     bool
	}{
		{outcomes: []flow.Outcome{flow.Overloaded, flow.Overloaded, flow.Overloaded}, open: true},
		{outcomes: []flow.Outcome{flow.Lost, flow.Overloaded, flow.Lost}, open: true},
		{outcomes: []flow.Outcome{flow.Overloaded, flow.Overloaded, flow.Refused, flow.Overloaded}, open: false},
		{outcomes: []flow.Outcome{flow.Overloaded, flow.Overloaded, flow.Accepted, flow.Overloaded}, open: false},
		{outcomes: []flow.Outcome{flow.Overloaded, flow.Overloaded, flow.NotSent}, open: false},
		{outcomes: []flow.Outcome{flow.Throttled, flow.Throttled, flow.Throttled, flow.Throttled}, open: false},
	}
	for _, tt := range tests {
		t.Run(fmtOutcomes(tt.outcomes), func(t *testing.T) {
			ctx := context.Background()
			c := &flow.Control{
				Limit:   limit.New(limit.Options{Min: 1, Max: 8, Initial: 8}),
				Breaker: breaker.New(breaker.Options{Failures: 3, Cooldown: time.Hour}),
			}
			for _, o := range tt.outcomes {
				s, err := c.Acquire(ctx)
				require.NoError(t, err)
				s.Done(o, time.Millisecond)
				s.Done(o, time.Millisecond) // a second Done changes nothing
			}
			st := c.Status()
			require.Zero(t, st.GetInFlight(), "every slot returned")
			if tt.open {
				require.Equal(t, spoolv1.BreakerState_BREAKER_STATE_OPEN, st.GetBreakerState())
				require.EqualValues(t, 1, st.GetBreakerOpens())
				probeCtx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
				defer cancel()
				_, err := c.Receive(probeCtx)
				require.ErrorIs(t, err, context.DeadlineExceeded, "an open breaker holds receives")
			} else {
				require.Equal(t, spoolv1.BreakerState_BREAKER_STATE_CLOSED, st.GetBreakerState())
			}
		})
	}
}

func TestOverloadShrinksTheLimit(t *testing.T) {
	ctx := context.Background()
	for _, o := range []flow.Outcome{flow.Overloaded, flow.Throttled} {
		c := &flow.Control{Limit: limit.New(limit.Options{Min: 1, Max: 16, Initial: 16})}
		s, err := c.Acquire(ctx)
		require.NoError(t, err)
		s.Done(o, time.Millisecond)
		require.Less(t, c.Status().GetConcurrencyLimit(), int32(16), "%s shrinks the limit", o)
	}

	// Refusals and lost answers say nothing about load.
	c := &flow.Control{Limit: limit.New(limit.Options{Min: 1, Max: 16, Initial: 16})}
	for _, o := range []flow.Outcome{flow.Refused, flow.Lost, flow.NotSent} {
		s, err := c.Acquire(ctx)
		require.NoError(t, err)
		s.Done(o, time.Millisecond)
	}
	require.EqualValues(t, 16, c.Status().GetConcurrencyLimit())
}

func fmtOutcomes(os []flow.Outcome) string {
	s := ""
	for i, o := range os {
		if i > 0 {
			s += ","
		}
		s += o.String()
	}
	return s
}
