package clocktest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/clock/clocktest"
)

// AwaitTimers returns once enough goroutines wait, with the earliest end,
// and Advance to it wakes only the waits that are due.
func TestAwaitTimers(t *testing.T) {
	clk := clocktest.New(false)
	start := clk.Now()
	late := clk.After(3 * time.Second)
	go func() { clk.After(time.Second) }()
	next, waiting, err := clk.AwaitTimers(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, waiting)
	require.Equal(t, start.Add(time.Second), next)
	clk.Advance(next.Sub(clk.Now()))
	select {
	case <-late:
		t.Fatal("a wait fired before its end")
	default:
	}
	clk.Advance(2 * time.Second)
	require.Equal(t, start.Add(3*time.Second), <-late)
}

// A wait for more timers than will come ends with the context, saying how
// many there were.
func TestAwaitTimersEndsWithContext(t *testing.T) {
	clk := clocktest.New(false)
	clk.After(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, waiting, err := clk.AwaitTimers(ctx, 2)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, 1, waiting)
}
