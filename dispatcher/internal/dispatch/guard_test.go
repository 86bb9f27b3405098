package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestGateHoldsForPaymentDateAndCanary(t *testing.T) {
	tests := []struct {
		name  string
		job   func(j *spoolv1.Job)
		row   int64
		want  consume.Disposition
		sends int
	}{
		{name: "before the payment date: back on it, no attempt", row: 1,
			job:  func(j *spoolv1.Job) { j.DeliverAfter = timestamppb.New(t0.Add(90 * time.Second)) },
			want: consume.After(90 * time.Second)},
		{name: "on the payment date: delivered", row: 1,
			job:  func(j *spoolv1.Job) { j.DeliverAfter = timestamppb.New(t0) },
			want: consume.Delete, sends: 1},
		{name: "a canary row is delivered", row: 50,
			job:  func(j *spoolv1.Job) { j.Canary = &spoolv1.Canary{Rows: 50} },
			want: consume.Delete, sends: 1},
		{name: "a row beyond the canary waits as a paused job's", row: 51,
			job:  func(j *spoolv1.Job) { j.Canary = &spoolv1.Canary{Rows: 50} },
			want: consume.After(10 * time.Second)},
		{name: "a released canary holds nothing", row: 51,
			job:  func(j *spoolv1.Job) { j.Canary = &spoolv1.Canary{Rows: 50, Released: true} },
			want: consume.Delete, sends: 1},
		{name: "the payment date comes before the canary", row: 1,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50}
				j.DeliverAfter = timestamppb.New(t0.Add(time.Hour))
			},
			want: consume.After(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, sealed, ledger.Hold)
			tt.job(f.jobs.job)
			f.jobs.job.Total = 1000
			m := message(tt.row)
			require.Equal(t, tt.want, f.h.Handle(t.Context(), m))
			require.Equal(t, tt.sends, f.send.calls)
		})
	}
}

// guard is a Guard over the fixture's job, as the store would answer.
type guard struct {
	mu                        sync.Mutex
	job                       *spoolv1.Job
	thresholds, canaries, rel int
	reason                    string
}

func (g *guard) PauseOnThreshold(context.Context, string) (*spoolv1.Job, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.thresholds++
	g.job.Paused, g.job.PauseCause, g.job.PauseReason = true, spoolv1.PauseCause_PAUSE_CAUSE_THRESHOLD, "crossed"
	return proto.Clone(g.job).(*spoolv1.Job), true, nil
}

func (g *guard) PauseCanary(_ context.Context, _, reason string) (*spoolv1.Job, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.canaries++
	g.reason = reason
	g.job.Paused, g.job.PauseCause, g.job.PauseReason = true, spoolv1.PauseCause_PAUSE_CAUSE_CANARY, reason
	return proto.Clone(g.job).(*spoolv1.Job), true, nil
}

func (g *guard) ReleaseCanary(context.Context, string) (*spoolv1.Job, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rel++
	g.job.Canary.Released = true
	return proto.Clone(g.job).(*spoolv1.Job), nil
}

func TestGuardPausesOncePerRead(t *testing.T) {
	tests := []struct {
		name                           string
		job                            func(j *spoolv1.Job)
		row                            int64
		want                           consume.Disposition
		thresholds, canaries, releases int
		reason                         string
	}{
		{name: "below the threshold: delivered", row: 1,
			job: func(j *spoolv1.Job) {
				j.FailureThreshold = &spoolv1.FailureThreshold{MaxFailureRate: 0.02}
				j.Delivered, j.Failed = 99, 1
			},
			want: consume.Delete},
		{name: "over the threshold: paused, then held", row: 1,
			job: func(j *spoolv1.Job) {
				j.FailureThreshold = &spoolv1.FailureThreshold{MaxFailureRate: 0.02}
				j.Delivered, j.Failed, j.DeadLettered = 95, 4, 1
			},
			want: consume.After(10 * time.Second), thresholds: 1},
		{name: "a paused job is not decided again", row: 1,
			job: func(j *spoolv1.Job) {
				j.FailureThreshold = &spoolv1.FailureThreshold{MaxFailures: proto.Int64(0)}
				j.Failed, j.Paused = 3, true
			},
			want: consume.After(10 * time.Second)},
		{name: "canary still running: a canary row goes", row: 10,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50}
				j.Delivered = 49
			},
			want: consume.Delete},
		{name: "canary settled: paused with its reason", row: 51,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50}
				j.Delivered = 50
			},
			want: consume.After(10 * time.Second), canaries: 1, reason: "canary of 50 delivered; resume to continue"},
		{name: "canary with failures pauses even when it may go on", row: 51,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50, ContinueWhenClean: true}
				j.Delivered, j.Failed = 48, 2
			},
			want: consume.After(10 * time.Second), canaries: 1, reason: "canary of 50 settled with 2 failed and 0 unknown; resume to continue"},
		{name: "clean canary goes on by itself", row: 51,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50, ContinueWhenClean: true}
				j.Delivered = 50
			},
			want: consume.Delete, releases: 1},
		{name: "the canary's size as sealed", row: 51,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50, Size: 45}
				j.RowsRejected, j.Delivered = 7, 44
			},
			want: consume.After(10 * time.Second)},
		{name: "the canary's size as sealed, settled", row: 51,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50, Size: 45}
				j.RowsRejected, j.Delivered = 7, 45
			},
			want: consume.After(10 * time.Second), canaries: 1, reason: "canary of 50 delivered; resume to continue"},
		{name: "without a size, rows the ingestor left out shrink the canary", row: 51,
			job: func(j *spoolv1.Job) {
				j.Canary = &spoolv1.Canary{Rows: 50}
				j.RowsRejected, j.Delivered = 2, 48
			},
			want: consume.After(10 * time.Second), canaries: 1, reason: "canary of 50 delivered; resume to continue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &guard{}
			f := newFixtureWith(t, sealed, ledger.Hold, dispatch.Options{Guard: g})
			f.jobs.job.Total = 1000
			tt.job(f.jobs.job)
			g.job = f.jobs.job
			require.Equal(t, tt.want, f.h.Handle(t.Context(), message(tt.row)))
			// The next message of the job reads the cached record: no
			// second decision.
			f.h.Handle(t.Context(), message(tt.row))
			require.Equal(t, tt.thresholds, g.thresholds)
			require.Equal(t, tt.canaries, g.canaries)
			require.Equal(t, tt.releases, g.rel)
			require.Equal(t, tt.reason, g.reason)
		})
	}
}
