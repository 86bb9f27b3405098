package tally_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	"github.com/spoolhq/spool/dispatcher/internal/tally"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/testkit"
)

// errLost is the error of a write applied whose answer was lost.
var errLost = errors.New("connection reset before the answer")

// fakeStore keeps counter items as the job store does (a write lands over
// an older version only) and fails or loses writes on demand.
type fakeStore struct {
	mu       sync.Mutex
	writes   []string
	items    map[string]map[string]jobstore.CounterWrite // job → writer → newest write
	fail     map[string]error                            // refused, not applied
	lose     map[string]int                              // applied, answer lost
	jobs     map[string]*spoolv1.Job
	complete error
	written  chan struct{}
}

func newStore() *fakeStore {
	return &fakeStore{
		items: map[string]map[string]jobstore.CounterWrite{}, fail: map[string]error{}, lose: map[string]int{},
		jobs: map[string]*spoolv1.Job{}, written: make(chan struct{}, 100),
	}
}

func (s *fakeStore) WriteCounts(_ context.Context, id string, w jobstore.CounterWrite) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail[id]; err != nil {
		return fmt.Errorf("write counts of job %s: %w", id, err)
	}
	if s.items[id] == nil {
		s.items[id] = map[string]jobstore.CounterWrite{}
	}
	if cur, ok := s.items[id][w.Writer]; !ok || cur.Version < w.Version {
		s.items[id][w.Writer] = w
	}
	s.writes = append(s.writes, id)
	select {
	case s.written <- struct{}{}:
	default:
	}
	if s.lose[id] > 0 {
		s.lose[id]--
		return fmt.Errorf("write counts of job %s: %w", id, errLost)
	}
	return nil
}

// sum is the job's counters as a reader sums them.
func (s *fakeStore) sum(id string) jobstore.Counts {
	var c jobstore.Counts
	for _, w := range s.items[id] {
		c = c.Plus(w.Counts)
	}
	return c
}

func (s *fakeStore) Get(_ context.Context, id string) (*spoolv1.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return nil, jobstore.ErrNotFound
	}
	c := s.sum(id)
	return &spoolv1.Job{JobId: id, State: j.GetState(), Total: j.GetTotal(), Delivered: c.Delivered, Failed: c.Failed, Unknown: c.Unknown}, nil
}

func (s *fakeStore) Complete(_ context.Context, id string, confirmed jobstore.Settled) (*spoolv1.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.complete != nil {
		return nil, s.complete
	}
	j := s.jobs[id]
	if j.GetState() != spoolv1.JobState_JOB_STATE_SEALED || confirmed.Sum() < j.GetTotal() {
		return j, jobstore.ErrState
	}
	j.State = spoolv1.JobState_JOB_STATE_COMPLETED
	return j, nil
}

func (s *fakeStore) seal(id string, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs[id] = &spoolv1.Job{JobId: id, State: spoolv1.JobState_JOB_STATE_SEALED, Total: total}
}

func (s *fakeStore) state(id string) spoolv1.JobState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[id].GetState()
}

func (s *fakeStore) set(f func(s *fakeStore)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *fakeStore) totals() ([]string, map[string]jobstore.Counts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]jobstore.Counts{}
	for id := range s.items {
		out[id] = s.sum(id)
	}
	return append([]string(nil), s.writes...), out
}

// fakeLedger answers the settled rows set per job.
type fakeLedger struct {
	mu      sync.Mutex
	settled map[string]int64
	counts  int
}

func (l *fakeLedger) Count(_ context.Context, id string) (ledger.Count, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts++
	return ledger.Count{Delivered: l.settled[id]}, nil
}

func (l *fakeLedger) set(id string, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.settled[id] = n
}

func newLedger() *fakeLedger { return &fakeLedger{settled: map[string]int64{}} }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestFlush(t *testing.T) {
	tests := []struct {
		name        string
		adds        []func(*tally.Tally)
		fail        map[string]error
		wantWrites  int
		wantTotals  map[string]jobstore.Counts
		wantPending map[string]jobstore.Counts
		wantErr     bool
	}{
		{
			name: "counts merge into one write per job",
			adds: []func(*tally.Tally){
				func(t *tally.Tally) { t.Add("a", jobstore.Counts{Delivered: 1}) },
				func(t *tally.Tally) { t.Add("a", jobstore.Counts{Delivered: 1, Retries: 2}) },
				func(t *tally.Tally) { t.Add("b", jobstore.Counts{Failed: 1}) },
				func(t *tally.Tally) { t.Add("a", jobstore.Counts{}) },
				func(t *tally.Tally) { t.Add("c", jobstore.Counts{Unknown: 2, Suppressed: 1, Dropped: 4}) },
				func(t *tally.Tally) { t.Add("c", jobstore.Counts{Unknown: -1, Delivered: 1}) },
			},
			wantWrites:  3,
			wantTotals:  map[string]jobstore.Counts{"a": {Delivered: 2, Retries: 2}, "b": {Failed: 1}, "c": {Unknown: 1, Delivered: 1, Suppressed: 1, Dropped: 4}},
			wantPending: map[string]jobstore.Counts{},
		},
		{
			name: "failed write is kept",
			adds: []func(*tally.Tally){
				func(t *tally.Tally) { t.Add("a", jobstore.Counts{Delivered: 3}) },
				func(t *tally.Tally) { t.Add("b", jobstore.Counts{Delivered: 4}) },
			},
			fail:        map[string]error{"a": errors.New("throttled")},
			wantWrites:  1,
			wantTotals:  map[string]jobstore.Counts{"b": {Delivered: 4}},
			wantPending: map[string]jobstore.Counts{"a": {Delivered: 3}},
			wantErr:     true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore()
			for id, err := range tt.fail {
				s.fail[id] = err
			}
			ty := tally.New(s, newLedger(), "d1", quiet())
			for _, add := range tt.adds {
				add(ty)
			}
			err := ty.Flush(t.Context())
			if tt.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			writes, totals := s.totals()
			require.Len(t, writes, tt.wantWrites)
			require.Equal(t, tt.wantTotals, totals)
			require.Equal(t, tt.wantPending, ty.Pending())
		})
	}
}

func TestFailedWriteIsWrittenWholeNextFlush(t *testing.T) {
	s := newStore()
	s.fail["a"] = errors.New("throttled")
	ty := tally.New(s, newLedger(), "d1", quiet())
	ty.Add("a", jobstore.Counts{Delivered: 3, Retries: 1})
	require.Error(t, ty.Flush(t.Context()))

	// Added meanwhile: written with what failed.
	ty.Add("a", jobstore.Counts{Delivered: 2})
	s.set(func(s *fakeStore) { delete(s.fail, "a") })
	require.NoError(t, ty.Flush(t.Context()))

	writes, totals := s.totals()
	require.Equal(t, []string{"a"}, writes)
	require.Equal(t, map[string]jobstore.Counts{"a": {Delivered: 5, Retries: 1}}, totals)
	require.Empty(t, ty.Pending())
}

// TestWriteAppliedButAnswerLostCountsOnce: a write applied whose answer
// was lost is written again at the next flush, and counts once.
func TestWriteAppliedButAnswerLostCountsOnce(t *testing.T) {
	s := newStore()
	s.lose["a"] = 2
	ty := tally.New(s, newLedger(), "d1", quiet())
	ty.Add("a", jobstore.Counts{Delivered: 3})
	require.ErrorIs(t, ty.Flush(t.Context()), errLost)
	ty.Add("a", jobstore.Counts{Delivered: 1})
	require.ErrorIs(t, ty.Flush(t.Context()), errLost)
	require.NoError(t, ty.Flush(t.Context()))

	writes, totals := s.totals()
	require.Len(t, writes, 3, "written again until acknowledged")
	require.Equal(t, jobstore.Counts{Delivered: 4}, totals["a"], "counted once")
	require.Empty(t, ty.Pending())
}

// TestCompletesOnlyOnTheLedger: counters that say every row is settled
// complete nothing until the ledger says so too; a failed completion
// never writes the counts again.
func TestCompletesOnlyOnTheLedger(t *testing.T) {
	s := newStore()
	s.seal("a", 3)
	l := newLedger()
	clk := testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	ty := tally.New(s, l, "d1", quiet(), tally.WithClock(clk.Now))

	ty.Add("a", jobstore.Counts{Delivered: 2})
	require.NoError(t, ty.Flush(t.Context()))
	require.Zero(t, l.counts, "rows still to settle: the ledger is not counted")

	ty.Add("a", jobstore.Counts{Delivered: 1})
	l.set("a", 2) // the ledger's index lags
	require.NoError(t, ty.Flush(t.Context()))
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, s.state("a"), "counters alone complete nothing")
	require.Equal(t, 1, l.counts)

	require.NoError(t, ty.Flush(t.Context()))
	require.Equal(t, 1, l.counts, "the ledger is counted again only after a back-off")

	clk.Advance(time.Second)
	s.set(func(s *fakeStore) { s.complete = errors.New("throttled") })
	l.set("a", 3)
	require.Error(t, ty.Flush(t.Context()))
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, s.state("a"))

	clk.Advance(2 * time.Second)
	s.set(func(s *fakeStore) { s.complete = nil })
	require.NoError(t, ty.Flush(t.Context()))
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, s.state("a"))

	writes, totals := s.totals()
	require.Len(t, writes, 2, "a failed completion never writes the counts again")
	require.Equal(t, jobstore.Counts{Delivered: 3}, totals["a"])

	l.counts = 0
	clk.Advance(time.Hour)
	require.NoError(t, ty.Flush(t.Context()))
	require.Zero(t, l.counts, "a completed job is not looked at again")
}

// TestIdleJobIsForgotten: a job written and unchanged for long leaves
// memory; counted again, it is written to a new item, and nothing is lost.
func TestIdleJobIsForgotten(t *testing.T) {
	s := newStore()
	clk := testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	ty := tally.New(s, newLedger(), "d1", quiet(), tally.WithClock(clk.Now))
	ty.Add("a", jobstore.Counts{Delivered: 2})
	require.NoError(t, ty.Flush(t.Context()))
	require.NoError(t, ty.Flush(t.Context())) // the completion look: not sealed
	clk.Advance(time.Hour)
	require.NoError(t, ty.Flush(t.Context()))
	ty.Add("a", jobstore.Counts{Delivered: 1})
	require.NoError(t, ty.Flush(t.Context()))
	_, totals := s.totals()
	require.Equal(t, jobstore.Counts{Delivered: 3}, totals["a"])
	require.Len(t, s.items["a"], 2, "a second item")
}

func TestRunFlushesPeriodically(t *testing.T) {
	s := newStore()
	ty := tally.New(s, newLedger(), "d1", quiet())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ty.Run(ctx, 10*time.Millisecond, time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	ty.Add("a", jobstore.Counts{Delivered: 1})
	<-s.written
	_, totals := s.totals()
	require.Equal(t, jobstore.Counts{Delivered: 1}, totals["a"])
}

func TestRunFlushesAtShutdown(t *testing.T) {
	// An interval of an hour: only the shutdown flush writes this.
	s := newStore()
	ty := tally.New(s, newLedger(), "d1", quiet())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ty.Run(ctx, time.Hour, time.Second); close(done) }()
	ty.Add("b", jobstore.Counts{Delivered: 7})
	cancel()
	<-done
	_, totals := s.totals()
	require.Equal(t, map[string]jobstore.Counts{"b": {Delivered: 7}}, totals)
	require.Empty(t, ty.Pending())
}

func TestConcurrentAdds(t *testing.T) {
	s := newStore()
	ty := tally.New(s, newLedger(), "d1", quiet())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				ty.Add("a", jobstore.Counts{Delivered: 1})
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 50 {
				require.NoError(t, ty.Flush(t.Context()))
			}
		})
	}
	wg.Wait()
	require.NoError(t, ty.Flush(t.Context()))
	_, totals := s.totals()
	require.Equal(t, jobstore.Counts{Delivered: 8000}, totals["a"])
}
