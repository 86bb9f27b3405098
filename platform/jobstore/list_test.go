package jobstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
)

// listedJob is a job the listing test made: its id, creation time and
// final state.
type listedJob struct {
	id      string
	created time.Time
	state   spoolv1.JobState
}

// makeJobs creates n jobs a second apart from t0 (two in the same
// millisecond at the end, to order by id), and moves every third to
// SEALED and every third plus one to CANCELLED; the rest stay RECEIVING.
func makeJobs(t *testing.T, n int, t0 time.Time) (*jobstore.Store, []listedJob) {
	t.Helper()
	ctx := context.Background()
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(ctx, db, "jobs"))
	var now time.Time
	s := jobstore.New(db, "jobs", jobstore.WithClock(func() time.Time { return now }))
	var jobs []listedJob
	for i := range n {
		now = t0.Add(time.Duration(min(i, n-2)) * time.Second)
		j := listedJob{id: fmt.Sprintf("j%02d", i), created: now, state: spoolv1.JobState_JOB_STATE_RECEIVING}
		_, err := s.Create(ctx, &spoolv1.Job{JobId: j.id})
		require.NoError(t, err)
		switch i % 3 {
		case 0:
			_, err = s.Seal(ctx, j.id, jobstore.Ingest{Received: 1, Published: 1})
			j.state = spoolv1.JobState_JOB_STATE_SEALED
		case 1:
			_, err = s.End(ctx, j.id, spoolv1.JobState_JOB_STATE_CANCELLED, "test")
			j.state = spoolv1.JobState_JOB_STATE_CANCELLED
		}
		require.NoError(t, err)
		jobs = append(jobs, j)
	}
	// Newest first; the two of one millisecond by id, descending.
	slices.Reverse(jobs)
	return s, jobs
}

func TestListPagesAndFilters(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	s, jobs := makeJobs(t, 26, t0)
	want := func(keep func(listedJob) bool) []string {
		var ids []string
		for _, j := range jobs {
			if keep(j) {
				ids = append(ids, j.id)
			}
		}
		return ids
	}
	is := func(states ...spoolv1.JobState) func(listedJob) bool {
		return func(j listedJob) bool { return slices.Contains(states, j.state) }
	}
	tests := []struct {
		name   string
		filter jobstore.ListFilter
		want   []string
	}{
		{name: "every job, small pages", filter: jobstore.ListFilter{Limit: 4}, want: want(func(listedJob) bool { return true })},
		{name: "one page holds all", filter: jobstore.ListFilter{Limit: 100}, want: want(func(listedJob) bool { return true })},
		{
			name:   "one state",
			filter: jobstore.ListFilter{Limit: 3, States: []spoolv1.JobState{spoolv1.JobState_JOB_STATE_SEALED}},
			want:   want(is(spoolv1.JobState_JOB_STATE_SEALED)),
		},
		{
			name: "two states in a time range",
			filter: jobstore.ListFilter{
				Limit: 2, States: []spoolv1.JobState{spoolv1.JobState_JOB_STATE_CANCELLED, spoolv1.JobState_JOB_STATE_SEALED},
				After: t0.Add(5 * time.Second), Before: t0.Add(15 * time.Second),
			},
			want: want(func(j listedJob) bool {
				return is(spoolv1.JobState_JOB_STATE_CANCELLED, spoolv1.JobState_JOB_STATE_SEALED)(j) &&
					!j.created.Before(t0.Add(5*time.Second)) && j.created.Before(t0.Add(15*time.Second))
			}),
		},
		{name: "a state with no jobs", filter: jobstore.ListFilter{Limit: 5, States: []spoolv1.JobState{spoolv1.JobState_JOB_STATE_ABORTED}}},
		{name: "an empty range", filter: jobstore.ListFilter{Limit: 5, After: t0.Add(time.Hour), Before: t0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			f := tt.filter
			for pages := 0; ; pages++ {
				require.Less(t, pages, 30, "paging does not end")
				ids, next, err := s.List(context.Background(), f)
				require.NoError(t, err)
				require.LessOrEqual(t, len(ids), f.Limit)
				got = append(got, ids...)
				if next == "" {
					break
				}
				f.Token = next
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestListSeesStateChanges(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	s, _ := makeJobs(t, 3, t0)
	ctx := context.Background()
	sealed := jobstore.ListFilter{Limit: 10, States: []spoolv1.JobState{spoolv1.JobState_JOB_STATE_SEALED}}
	ids, _, err := s.List(ctx, sealed)
	require.NoError(t, err)
	require.Equal(t, []string{"j00"}, ids)

	// Sealed with nothing published, the job completes at once.
	_, err = s.Seal(ctx, "j02", jobstore.Ingest{})
	require.NoError(t, err)
	ids, _, err = s.List(ctx, jobstore.ListFilter{Limit: 10, States: []spoolv1.JobState{spoolv1.JobState_JOB_STATE_COMPLETED, spoolv1.JobState_JOB_STATE_SEALED}})
	require.NoError(t, err)
	require.Equal(t, []string{"j02", "j00"}, ids)
	ids, _, err = s.List(ctx, jobstore.ListFilter{Limit: 10, States: []spoolv1.JobState{spoolv1.JobState_JOB_STATE_RECEIVING}})
	require.NoError(t, err)
	require.Empty(t, ids)
}

func TestListRefusesABadToken(t *testing.T) {
	s, _ := makeJobs(t, 1, time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	for _, tok := range []string{"!!", "bm90LWEta2V5"} {
		_, _, err := s.List(context.Background(), jobstore.ListFilter{Limit: 1, Token: tok})
		require.ErrorIs(t, err, jobstore.ErrBadToken, tok)
	}
}
