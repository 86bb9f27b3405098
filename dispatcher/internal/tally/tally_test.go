package tally_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/tally"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// fakeStore records the writes it accepted, and fails jobs on demand.
type fakeStore struct {
	mu      sync.Mutex
	writes  []string
	totals  map[string]jobstore.Counts
	fail    map[string]error
	written chan struct{}
}

func newStore() *fakeStore {
	return &fakeStore{totals: map[string]jobstore.Counts{}, fail: map[string]error{}, written: make(chan struct{}, 100)}
}

func (s *fakeStore) Add(_ context.Context, id string, c jobstore.Counts) (*spoolv1.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail[id]; err != nil {
		return nil, fmt.Errorf("add counts to job %s: %w", id, err)
	}
	s.writes = append(s.writes, id)
	s.totals[id] = s.totals[id].Plus(c)
	select {
	case s.written <- struct{}{}:
	default:
	}
	return &spoolv1.Job{JobId: id}, nil
}

func (s *fakeStore) setFail(id string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.fail, id)
		return
	}
	s.fail[id] = err
}

func (s *fakeStore) state() ([]string, map[string]jobstore.Counts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]jobstore.Counts{}
	for k, v := range s.totals {
		out[k] = v
	}
	return append([]string(nil), s.writes...), out
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

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
			name: "deltas merge into one write per job",
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
		{
			name: "unknown job is dropped",
			adds: []func(*tally.Tally){
				func(t *tally.Tally) { t.Add("gone", jobstore.Counts{Delivered: 3}) },
			},
			fail:        map[string]error{"gone": jobstore.ErrNotFound},
			wantTotals:  map[string]jobstore.Counts{},
			wantPending: map[string]jobstore.Counts{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore()
			for id, err := range tt.fail {
				s.setFail(id, err)
			}
			ty := tally.New(s, quiet())
			for _, add := range tt.adds {
				add(ty)
			}
			err := ty.Flush(t.Context())
			if tt.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			writes, totals := s.state()
			require.Len(t, writes, tt.wantWrites)
			require.Equal(t, tt.wantTotals, totals)
			require.Equal(t, tt.wantPending, ty.Pending())
		})
	}
}

func TestFailedWriteIsRetriedNextFlush(t *testing.T) {
	s := newStore()
	s.setFail("a", errors.New("throttled"))
	ty := tally.New(s, quiet())
	ty.Add("a", jobstore.Counts{Delivered: 3, Retries: 1})
	require.Error(t, ty.Flush(t.Context()))

	// Added meanwhile: merged with what was kept.
	ty.Add("a", jobstore.Counts{Delivered: 2})
	s.setFail("a", nil)
	require.NoError(t, ty.Flush(t.Context()))

	writes, totals := s.state()
	require.Equal(t, []string{"a"}, writes)
	require.Equal(t, map[string]jobstore.Counts{"a": {Delivered: 5, Retries: 1}}, totals)
	require.Empty(t, ty.Pending())
}

func TestRunFlushesPeriodically(t *testing.T) {
	s := newStore()
	ty := tally.New(s, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ty.Run(ctx, 10*time.Millisecond, time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	ty.Add("a", jobstore.Counts{Delivered: 1})
	<-s.written
	_, totals := s.state()
	require.Equal(t, jobstore.Counts{Delivered: 1}, totals["a"])
}

func TestRunFlushesAtShutdown(t *testing.T) {
	// An interval of an hour: only the shutdown flush writes this.
	s2 := newStore()
	ty2 := tally.New(s2, quiet())
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { ty2.Run(ctx2, time.Hour, time.Second); close(done2) }()
	ty2.Add("b", jobstore.Counts{Delivered: 7})
	cancel2()
	<-done2
	_, totals := s2.state()
	require.Equal(t, map[string]jobstore.Counts{"b": {Delivered: 7}}, totals)
	require.Empty(t, ty2.Pending())
}

func TestConcurrentAdds(t *testing.T) {
	s := newStore()
	ty := tally.New(s, quiet())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				ty.Add("a", jobstore.Counts{Delivered: 1})
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			require.NoError(t, ty.Flush(t.Context()))
		}
	})
	wg.Wait()
	require.NoError(t, ty.Flush(t.Context()))
	_, totals := s.state()
	require.Equal(t, jobstore.Counts{Delivered: 8000}, totals["a"])
}
