package report

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestAnswer(t *testing.T) {
	tests := []struct {
		name string
		resp *spoolv1.StreamFileResponse
		want string
	}{
		{
			name: "clean file",
			resp: &spoolv1.StreamFileResponse{JobId: "j1", RowsReceived: 3, RowsPublished: 3, Job: &spoolv1.Job{FileName: "a.csv", State: spoolv1.JobState_JOB_STATE_SEALED}},
			want: "job j1 (a.csv): SEALED\nrows: 3 received, 3 published, 0 rejected\n",
		},
		{
			name: "first errors and how many more",
			resp: &spoolv1.StreamFileResponse{JobId: "j1", RowsReceived: 10, RowsPublished: 5, RowsRejected: 5, Errors: []*spoolv1.RowError{
				{Row: 0, Reason: "duplicate column name"},
				{Row: 4, Column: "amount", Reason: "not a number"},
			}},
			want: "job j1\nrows: 10 received, 5 published, 5 rejected\n  header: duplicate column name\n  row 4 (amount): not a number\n  ... and 3 more rejected rows\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			Answer(&b, tt.resp)
			require.Equal(t, tt.want, b.String())
		})
	}
}

func TestWall(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(time.Minute)
	tests := []struct {
		name string
		job  *spoolv1.Job
		want time.Duration
	}{
		{name: "completed", job: &spoolv1.Job{CreatedAt: timestamppb.New(t0), CompletedAt: timestamppb.New(t0.Add(7 * time.Second))}, want: 7 * time.Second},
		{name: "still running", job: &spoolv1.Job{CreatedAt: timestamppb.New(t0)}, want: time.Minute},
		{name: "no timestamps", job: &spoolv1.Job{}, want: 3 * time.Second},
		{name: "clock skew", job: &spoolv1.Job{CreatedAt: timestamppb.New(now.Add(time.Hour))}, want: 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Wall(tt.job, now, 3*time.Second))
		})
	}
}

func TestSummaryAndOutcome(t *testing.T) {
	tests := []struct {
		name    string
		job     *spoolv1.Job
		summary string
		err     string
	}{
		{
			name:    "completed",
			job:     &spoolv1.Job{JobId: "j1", State: spoolv1.JobState_JOB_STATE_COMPLETED, Total: 50, Delivered: 50, Retries: 2},
			summary: "job j1 COMPLETED: delivered 50 of 50, failed 0, retries 2\nwall time 2s, average 25.0 rows/s\n",
		},
		{
			name:    "completed with failures",
			job:     &spoolv1.Job{JobId: "j1", State: spoolv1.JobState_JOB_STATE_COMPLETED, Total: 50, Delivered: 48, Failed: 2},
			summary: "job j1 COMPLETED: delivered 48 of 50, failed 2, retries 0\nwall time 2s, average 25.0 rows/s\n",
			err:     "job j1 completed with 2 failed rows (of 50)",
		},
		{
			name:    "aborted",
			job:     &spoolv1.Job{JobId: "j1", State: spoolv1.JobState_JOB_STATE_ABORTED, RowsPublished: 20, Delivered: 10, StateReason: "stream broke"},
			summary: "job j1 ABORTED: delivered 10 of 20, failed 0, retries 0\nreason: stream broke\nwall time 2s, average 5.0 rows/s\n",
			err:     "job j1 ended ABORTED: stream broke",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			Summary(&b, tt.job, 2*time.Second)
			require.Equal(t, tt.summary, b.String())
			err := Outcome(tt.job)
			if tt.err == "" {
				require.NoError(t, err)
				return
			}
			var oe *OutcomeError
			require.ErrorAs(t, err, &oe)
			require.EqualError(t, err, tt.err)
		})
	}
}
