package dispatch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobevent"
)

// announcer records the rows events asked for, and stores them when
// accept says so, as the store's conditional write would.
type announcer struct {
	mu     sync.Mutex
	calls  []string
	accept bool
}

func (a *announcer) AnnounceRows(_ context.Context, _ *spoolv1.Job, kind jobevent.Kind, n int64) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, fmt.Sprintf("%s %d", kind, n))
	return a.accept, nil
}

func (a *announcer) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.calls
	a.calls = nil
	return c
}

// A dispatcher asks to announce a job's UNKNOWN and dead-lettered rows
// when their counts rise, once per count it saw announced, and after a
// refusal not again for a few seconds.
func TestAnnounceRowsAsCountsRise(t *testing.T) {
	a := &announcer{}
	now := t0
	f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{Announce: a, Now: func() time.Time { return now }})
	f.jobs.job.Total = 1000
	steps := []struct {
		name    string
		advance time.Duration
		set     func(j *spoolv1.Job)
		accept  bool
		want    []string
	}{
		{name: "none yet", set: func(j *spoolv1.Job) {}},
		{name: "first UNKNOWN rows", advance: 2 * time.Second, accept: true,
			set: func(j *spoolv1.Job) { j.Unknown = 3 }, want: []string{"job.rows_unknown 3"}},
		{name: "the same count is not asked again", advance: 2 * time.Second, set: func(j *spoolv1.Job) {}},
		{name: "a higher count, refused (too soon)", advance: 2 * time.Second,
			set: func(j *spoolv1.Job) { j.Unknown = 5 }, want: []string{"job.rows_unknown 5"}},
		{name: "not asked again within a few seconds", advance: 2 * time.Second, accept: true, set: func(j *spoolv1.Job) {}},
		{name: "asked again after them", advance: 4 * time.Second, accept: true,
			set: func(j *spoolv1.Job) {}, want: []string{"job.rows_unknown 5"}},
		{name: "dead letters, their own kind", advance: 2 * time.Second, accept: true,
			set: func(j *spoolv1.Job) { j.DeadLettered = 2 }, want: []string{"job.rows_dead_lettered 2"}},
		{name: "a job no longer sealed is not announced", advance: 2 * time.Second, accept: true,
			set: func(j *spoolv1.Job) { j.State, j.Unknown = spoolv1.JobState_JOB_STATE_COMPLETED, 9 }},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		s.set(f.jobs.job)
		a.mu.Lock()
		a.accept = s.accept
		a.mu.Unlock()
		f.h.Handle(t.Context(), message(1))
		require.Equal(t, s.want, a.take(), s.name)
	}
}
