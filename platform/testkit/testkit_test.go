package testkit_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/testkit"
)

// Concurrent writers lose nothing; run under -race it also shows the reads
// and writes are ordered.
func TestBufferConcurrentWrites(t *testing.T) {
	var b testkit.Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, err := b.Write([]byte("x"))
				require.NoError(t, err)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	require.Equal(t, strings.Repeat("x", 800), b.String())
}

func TestClockMovesOnlyWhenAdvanced(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	c := testkit.NewClock(t0)
	require.Equal(t, t0, c.Now())
	require.Equal(t, t0, c.Now())
	c.Advance(90 * time.Second)
	require.Equal(t, t0.Add(90*time.Second), c.Now())
}
