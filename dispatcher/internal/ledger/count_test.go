package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/platform/jobstore"
)

// The ledger's count of a job must equal the sum of the deltas its
// transitions earned: that is what makes it the truth a repair restores.
func TestCountMatchesTheDeltas(t *testing.T) {
	eachBackend(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.dispatcher("a", ledger.RetryWithKey)
		empty, err := a.Count(ctx, "job-1")
		require.NoError(t, err)
		require.Equal(t, ledger.Count{}, empty)

		var total jobstore.Counts
		add := func(_ ledger.Record, c jobstore.Counts) { total = sum(total, c) }
		add(send(t, a, tx(1), delivered))
		add(send(t, a, tx(2), delivered))
		add(send(t, a, tx(3), rejected))
		add(send(t, a, tx(4), unknown))
		// Row 5 was unknown and is being resent: still counted unknown.
		add(send(t, a, tx(5), unknown))
		w.clock.advance(time.Second)
		c, err := a.Claim(ctx, tx(5))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict)
		// Row 6 is claimed for its first send: it settles nothing yet.
		c, err = a.Claim(ctx, tx(6))
		require.NoError(t, err)
		require.Equal(t, ledger.Send, c.Verdict)
		// Row 7 was dead-lettered: it settles as such until redriven.
		c, err = a.Claim(ctx, tx(7))
		require.NoError(t, err)
		dead, counts, err := a.Finish(ctx, c.Record, ledger.Outcome{State: claimed, Status: 503, Reason: "dead-lettered: gave up", DeadLettered: true})
		require.NoError(t, err)
		add(dead, counts)

		got, err := a.Count(ctx, "job-1")
		require.NoError(t, err)
		require.Equal(t, ledger.Count{
			Delivered: 2, Failed: 1, Unknown: 2, DeadLettered: 1, Pending: 1, LastChange: w.clock.now().UnixMilli(),
		}, got)
		require.Equal(t, jobstore.Settled{Delivered: total.Delivered, Failed: total.Failed, Unknown: total.Unknown, DeadLettered: total.DeadLettered}, got.Settled())

		other, err := a.Count(ctx, "job-2")
		require.NoError(t, err)
		require.Equal(t, ledger.Count{}, other)
	})
}
