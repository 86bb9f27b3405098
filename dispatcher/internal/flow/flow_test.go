package flow_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/breaker"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
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
		done, err := c.Acquire(ctx)
		require.NoError(t, err)
		done(deliver.Overloaded, time.Millisecond)
		done(deliver.Overloaded, time.Millisecond)
		st := c.Status()
		require.Equal(t, spoolv1.BreakerState_BREAKER_STATE_CLOSED, st.GetBreakerState())
		require.Zero(t, st.GetRateLimit())
	}
}

// TestOutcomesTeachTheBreaker sends outcomes through slots and checks
// which of them count as the destination failing.
func TestOutcomesTeachTheBreaker(t *testing.T) {
	tests := []struct {
		outcomes []deliver.Outcome
		open     bool
	}{
		{outcomes: []deliver.Outcome{deliver.Overloaded, deliver.Overloaded, deliver.Overloaded}, open: true},
		{outcomes: []deliver.Outcome{deliver.Lost, deliver.Overloaded, deliver.Lost}, open: true},
		{outcomes: []deliver.Outcome{deliver.Overloaded, deliver.Overloaded, deliver.Refused, deliver.Overloaded}, open: false},
		{outcomes: []deliver.Outcome{deliver.Overloaded, deliver.Overloaded, deliver.Accepted, deliver.Overloaded}, open: false},
		{outcomes: []deliver.Outcome{deliver.Overloaded, deliver.Overloaded, deliver.NotSent}, open: false},
		{outcomes: []deliver.Outcome{deliver.Throttled, deliver.Throttled, deliver.Throttled, deliver.Throttled}, open: false},
	}
	for _, tt := range tests {
		t.Run(fmtOutcomes(tt.outcomes), func(t *testing.T) {
			ctx := context.Background()
			c := &flow.Control{
				Limit:   limit.New(limit.Options{Min: 1, Max: 8, Initial: 8}),
				Breaker: breaker.New(breaker.Options{Failures: 3, Cooldown: time.Hour}),
			}
			for _, o := range tt.outcomes {
				done, err := c.Acquire(ctx)
				require.NoError(t, err)
				done(o, time.Millisecond)
				done(o, time.Millisecond) // a second call changes nothing
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
	// A few overload answers in a row are more than a destination's random
	// failures; a single one is not (the limit's own tests say how many).
	for _, o := range []deliver.Outcome{deliver.Overloaded, deliver.Throttled} {
		c := &flow.Control{Limit: limit.New(limit.Options{Min: 1, Max: 16, Initial: 16})}
		var dones []func(deliver.Outcome, time.Duration)
		for range 4 {
			done, err := c.Acquire(ctx)
			require.NoError(t, err)
			dones = append(dones, done)
		}
		for _, done := range dones {
			done(o, time.Millisecond)
		}
		require.Less(t, c.Status().GetConcurrencyLimit(), int32(16), "%s shrinks the limit", o)
	}

	// Refusals and lost answers say nothing about load.
	c := &flow.Control{Limit: limit.New(limit.Options{Min: 1, Max: 16, Initial: 16})}
	for _, o := range []deliver.Outcome{deliver.Refused, deliver.Lost, deliver.NotSent} {
		done, err := c.Acquire(ctx)
		require.NoError(t, err)
		done(o, time.Millisecond)
	}
	require.EqualValues(t, 16, c.Status().GetConcurrencyLimit())
}

func fmtOutcomes(os []deliver.Outcome) string {
	s := ""
	for i, o := range os {
		if i > 0 {
			s += ","
		}
		s += o.String()
	}
	return s
}
