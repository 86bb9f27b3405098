package progress

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vbauerster/mpb/v8"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/testkit"
)

func TestSettled(t *testing.T) {
	tests := []struct {
		name        string
		job         *spoolv1.Job
		settled, of int64
	}{
		{name: "receiving counts published so far", job: &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_RECEIVING, RowsPublished: 40, Delivered: 10, Failed: 2}, settled: 12, of: 40},
		{name: "sealed counts the total", job: &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_SEALED, RowsPublished: 100, Total: 100, Delivered: 60}, settled: 60, of: 100},
		{name: "aborted before sealing", job: &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_ABORTED, RowsPublished: 30, Delivered: 30}, settled: 30, of: 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			settled, of := Settled(tt.job)
			require.Equal(t, tt.settled, settled)
			require.Equal(t, tt.of, of)
		})
	}
}

func step(total int64, state spoolv1.JobState, settled int64, final bool) *spoolv1.JobProgress {
	return &spoolv1.JobProgress{
		Job:           &spoolv1.Job{JobId: "job-123456789", State: state, Total: total, RowsPublished: total, Delivered: settled},
		RatePerSecond: 12.5,
		Eta:           durationpb.New(1500 * time.Millisecond),
		Final:         final,
	}
}

func TestLinesPrintEveryIntervalAndTheFinalMessage(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(0, 0)
	l := NewLines(&out, 5*time.Second, func() time.Time { return now })
	sealed := spoolv1.JobState_JOB_STATE_SEALED
	l.Update(step(100, sealed, 10, false)) // printed: the first
	now = now.Add(2 * time.Second)
	l.Update(step(100, sealed, 20, false)) // too soon
	now = now.Add(3 * time.Second)
	l.Update(step(100, sealed, 30, false)) // 5 s after the first
	now = now.Add(time.Second)
	l.Note("dispatcher moved")
	l.Update(step(100, spoolv1.JobState_JOB_STATE_COMPLETED, 100, true)) // final: always
	l.Stop(true)
	want := "job job-123456789: SEALED, 10 of 100 rows settled (10.0%), 12.5 rows/s, ETA 2s\n" +
		"job job-123456789: SEALED, 30 of 100 rows settled (30.0%), 12.5 rows/s, ETA 2s\n" +
		"dispatcher moved\n" +
		"job job-123456789: COMPLETED, 100 of 100 rows settled (100.0%), 12.5 rows/s\n"
	require.Equal(t, want, out.String())
}

func TestUploadLines(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(0, 0)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	known := NewUploadLines(&out, 4<<20, time.Second, clock)
	known.Sent(1 << 20)
	known.Sent(3 << 20)
	unknown := NewUploadLines(&out, 0, time.Second, clock)
	unknown.Sent(1536)
	require.Equal(t, "sent 1.0 MiB of 4.0 MiB (25%)\nsent 3.0 MiB of 4.0 MiB (75%)\nsent 1.5 KiB\n", out.String())
}

func TestBarRendersProgressAndStops(t *testing.T) {
	tests := []struct {
		name      string
		completed bool
		last      *spoolv1.JobProgress
		want      []string
	}{
		{name: "completed", completed: true, last: step(200, spoolv1.JobState_JOB_STATE_COMPLETED, 200, true), want: []string{"job job-1234 COMPLETED", "200 / 200", "100 %", "12.5 rows/s"}},
		{name: "aborted", completed: false, last: step(200, spoolv1.JobState_JOB_STATE_ABORTED, 50, true), want: []string{"job job-1234 ABORTED", "50 / 200", "25 %"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out testkit.Buffer // written by the bar's render goroutine
			b := NewBar(context.Background(), &out, "job-123456789", mpb.WithAutoRefresh(), mpb.WithRefreshRate(time.Millisecond))
			b.Update(step(200, spoolv1.JobState_JOB_STATE_SEALED, 20, false))
			b.Note("a note above the bar")
			b.Update(tt.last)
			b.Stop(tt.completed)
			got := out.String()
			require.Contains(t, got, "a note above the bar")
			// The last frame is what the terminal shows at the end.
			frames := strings.Split(got, "\n")
			last := ""
			for i := len(frames) - 1; i >= 0 && last == ""; i-- {
				last = strings.TrimSpace(frames[i])
			}
			for _, w := range tt.want {
				require.Contains(t, last, w)
			}
		})
	}
}

func TestUploadBarStops(t *testing.T) {
	var out testkit.Buffer // written by the bar's render goroutine
	u := NewUploadBar(context.Background(), &out, "payroll.csv", 4096, mpb.WithAutoRefresh(), mpb.WithRefreshRate(time.Millisecond))
	u.Sent(2048)
	u.Sent(4096)
	u.Stop(true)
	require.Contains(t, out.String(), "send payroll.csv")
	require.Contains(t, out.String(), "4.0 KiB / 4.0 KiB")
}

func TestHeld(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	sealed := spoolv1.JobState_JOB_STATE_SEALED
	tests := []struct {
		name string
		job  *spoolv1.Job
		want string
	}{
		{name: "nothing holds it", job: &spoolv1.Job{State: sealed}},
		{name: "paused by its threshold", job: &spoolv1.Job{State: sealed, Paused: true, PauseReason: "failure rate 5.0% over 100 settled rows exceeds 2%"},
			want: "paused: failure rate 5.0% over 100 settled rows exceeds 2%"},
		{name: "paused without a reason", job: &spoolv1.Job{State: sealed, Paused: true}, want: "paused: by an operator"},
		{name: "before its payment date", job: &spoolv1.Job{State: sealed, DeliverAfter: timestamppb.New(now.Add(time.Hour))},
			want: "waiting until 2026-11-30T13:00:00Z (deliver-after)"},
		{name: "after its payment date", job: &spoolv1.Job{State: sealed, DeliverAfter: timestamppb.New(now.Add(-time.Hour))}},
		{name: "canary running", job: &spoolv1.Job{State: sealed, Canary: &spoolv1.Canary{Rows: 50}}, want: "canary: first 50 rows only"},
		{name: "canary released", job: &spoolv1.Job{State: sealed, Canary: &spoolv1.Canary{Rows: 50, Released: true}}},
		{name: "over", job: &spoolv1.Job{State: spoolv1.JobState_JOB_STATE_COMPLETED, Paused: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Held(tt.job, now))
		})
	}
}
