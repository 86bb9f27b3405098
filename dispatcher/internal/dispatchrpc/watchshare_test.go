package dispatchrpc_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// countingJobs counts the reads that reach the table.
type countingJobs struct {
	fakeJobs
	reads atomic.Int64
}

func (c *countingJobs) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	c.reads.Add(1)
	return c.fakeJobs.Get(ctx, id)
}

// tickers gives every watch a ticker of its own, which the test fires for
// all of them at once.
type tickers struct {
	mu sync.Mutex
	cs []chan time.Time
}

func (t *tickers) tick(time.Duration) (<-chan time.Time, func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := make(chan time.Time)
	t.cs = append(t.cs, c)
	return c, func() {}
}

// fire delivers at to every watch; each send returns once that watch took
// the tick.
func (t *tickers) fire(at time.Time) {
	t.mu.Lock()
	cs := append([]chan time.Time(nil), t.cs...)
	t.mu.Unlock()
	for _, c := range cs {
		c <- at
	}
}

func (t *tickers) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.cs)
}

func TestWatchersShareReads(t *testing.T) {
	const interval = 500 * time.Millisecond
	tests := []struct {
		name     string
		watchers int
		// step is how far the clock moves between ticks.
		step time.Duration
		// perTick is the table reads one tick of every watcher costs.
		perTick int64
	}{
		{name: "one watcher reads every interval", watchers: 1, step: interval, perTick: 1},
		{name: "fifty watchers read once per interval", watchers: 50, step: interval, perTick: 1},
		{name: "ticks within the interval share the last read", watchers: 20, step: interval / 5, perTick: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := &countingJobs{fakeJobs: fakeJobs{job: sealed(1000, 0)}}
			clk := newClock()
			tk := &tickers{}
			client, _ := serve(t, jobs, clk, func(o *dispatchrpc.Options) { o.Interval, o.Tick = interval, tk.tick })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var streams []spoolv1.DispatchService_WatchJobClient
			for range tt.watchers {
				s, err := client.WatchJob(ctx, &spoolv1.WatchJobRequest{JobId: "j"})
				require.NoError(t, err)
				_, err = s.Recv()
				require.NoError(t, err)
				streams = append(streams, s)
			}
			require.Equal(t, tt.watchers, tk.count())
			require.EqualValues(t, 1, jobs.reads.Load(), "watchers joining together share the first read")
			base := jobs.reads.Load()

			const rounds = 4
			now := clk.Now()
			for r := 1; r <= rounds; r++ {
				// A change every round: a watcher that read it sends it,
				// so its message says the round's tick was handled.
				jobs.set(func(j *spoolv1.Job) { j.Delivered = int64(r) })
				now = now.Add(tt.step)
				tk.fire(now)
				if tt.perTick == 0 {
					continue
				}
				for _, s := range streams {
					m, err := s.Recv()
					require.NoError(t, err)
					require.EqualValues(t, r, m.GetProgress().GetJob().GetDelivered(), "every watcher sees the round's read")
				}
			}
			if tt.perTick == 0 {
				// Move past the interval: one read, and every watcher
				// gets the last change.
				tk.fire(now.Add(interval))
				for _, s := range streams {
					m, err := s.Recv()
					require.NoError(t, err)
					require.EqualValues(t, rounds, m.GetProgress().GetJob().GetDelivered())
				}
				require.Equal(t, base+1, jobs.reads.Load())
				return
			}
			require.Equal(t, base+rounds*tt.perTick, jobs.reads.Load())
		})
	}
}
