package rate_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/rate"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
)

const table = "spool"

// countingAPI counts the writes a dispatcher's schedule makes.
type countingAPI struct {
	rate.API
	writes atomic.Int64
}

func (c *countingAPI) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.writes.Add(1)
	return c.API.UpdateItem(ctx, in, opts...)
}

// emulated starts the DynamoDB emulator with the job table and returns a
// function that opens a new client on it, as each dispatcher process has
// its own.
func emulated(tb testing.TB) func() *countingAPI {
	tb.Helper()
	cfg := emutest.Config(emutest.Start(tb, emulator.DynamoDB))
	require.NoError(tb, provision.EnsureTable(context.Background(), dynamodb.NewFromConfig(cfg), table))
	return func() *countingAPI { return &countingAPI{API: dynamodb.NewFromConfig(cfg)} }
}

// TestBackendContract runs the same checks on every Backend: the memory one
// and DynamoDB's on a real emulator.
func TestBackendContract(t *testing.T) {
	open := emulated(t)
	backends := []struct {
		name string
		new  func() rate.Backend
	}{
		{name: "memory", new: func() rate.Backend { return rate.NewMemory() }},
		{name: "dynamo", new: func() rate.Backend { return rate.NewDynamo(open(), table) }},
	}
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			t.Run("sequence", func(t *testing.T) { testSequence(t, bk.new()) })
			t.Run("concurrent", func(t *testing.T) {
				// Two dispatchers' backends over the same store.
				b1 := bk.new()
				b2 := b1
				if bk.name == "dynamo" {
					b2 = bk.new()
				}
				testConcurrent(t, b1, b2)
			})
		})
	}
}

func testSequence(t *testing.T, b rate.Backend) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	ms := time.Millisecond
	steps := []struct {
		name  string
		dest  string
		floor time.Duration
		span  time.Duration
		want  time.Duration
	}{
		{name: "a new schedule starts at floor", dest: "a", floor: 0, span: 100 * ms, want: 0},
		{name: "a busy schedule extends", dest: "a", floor: 10 * ms, span: 100 * ms, want: 100 * ms},
		{name: "floor at next extends", dest: "a", floor: 200 * ms, span: 50 * ms, want: 200 * ms},
		{name: "an idle schedule restarts at floor", dest: "a", floor: time.Second, span: 50 * ms, want: time.Second},
		{name: "destinations are apart", dest: "b", floor: 0, span: 10 * ms, want: 0},
		{name: "and extends from the restart", dest: "a", floor: time.Second, span: 10 * ms, want: 1050 * ms},
		{name: "a burst floor in the past", dest: "b", floor: -time.Second, span: 10 * ms, want: 10 * ms},
	}
	for _, s := range steps {
		got, err := b.Reserve(ctx, s.dest, t0.Add(s.floor), s.span)
		require.NoError(t, err, s.name)
		require.Equal(t, s.want, got.Sub(t0), s.name)
	}
}

// testConcurrent reserves from many goroutines at once, through two
// backends, and checks that the reservations tile the schedule exactly:
// no overlap, no gap.
func testConcurrent(t *testing.T, b1, b2 rate.Backend) {
	ctx := context.Background()
	floor := time.Unix(1_700_000_100, 0)
	const span = 10 * time.Millisecond
	var (
		mu     sync.Mutex
		starts []time.Time
		wg     sync.WaitGroup
	)
	for g := range 8 {
		b := b1
		if g%2 == 1 {
			b = b2
		}
		wg.Go(func() {
			for range 25 {
				s, err := b.Reserve(ctx, "c", floor, span)
				require.NoError(t, err)
				mu.Lock()
				starts = append(starts, s)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	for i, s := range starts {
		require.Equal(t, floor.Add(time.Duration(i)*span), s, "reservation %d", i)
	}
}
