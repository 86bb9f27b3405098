package dispatchrpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/threshold"
)

// control is a job store of one job for pause, resume and cancel.
type control struct {
	mu  sync.Mutex
	job *spoolv1.Job
}

// open checks, as the store does, that id is the job and it is not over.
// The caller holds c.mu.
func (c *control) open(id string) error {
	if id != c.job.GetJobId() {
		return fmt.Errorf("job %s: %w", id, jobstore.ErrNotFound)
	}
	if s := c.job.GetState(); s != spoolv1.JobState_JOB_STATE_RECEIVING && s != spoolv1.JobState_JOB_STATE_SEALED {
		return fmt.Errorf("job %s: %w", id, jobstore.ErrState)
	}
	return nil
}

func (c *control) SetPaused(_ context.Context, id string, paused bool) (*spoolv1.Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.open(id); err != nil {
		return nil, err
	}
	c.job.Paused = paused
	return c.job, nil
}

func (c *control) End(_ context.Context, id string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.open(id); err != nil {
		return nil, err
	}
	c.job.State, c.job.StateReason = state, reason
	return c.job, nil
}

func TestPauseResumeCancel(t *testing.T) {
	ctl := &control{job: &spoolv1.Job{JobId: "j", State: spoolv1.JobState_JOB_STATE_SEALED}}
	client, _ := serve(t, &fakeJobs{}, newClock(), func(o *dispatchrpc.Options) { o.Control = ctl })

	p, err := client.PauseJob(t.Context(), &spoolv1.PauseJobRequest{JobId: "j"})
	require.NoError(t, err)
	require.True(t, p.GetJob().GetPaused())
	r, err := client.ResumeJob(t.Context(), &spoolv1.ResumeJobRequest{JobId: "j"})
	require.NoError(t, err)
	require.False(t, r.GetJob().GetPaused())

	c, err := client.CancelJob(t.Context(), &spoolv1.CancelJobRequest{JobId: "j"})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_CANCELLED, c.GetJob().GetState())
	require.Equal(t, "cancelled by an operator", c.GetJob().GetStateReason())

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{name: "pause an ended job", call: func() error { _, err := client.PauseJob(t.Context(), &spoolv1.PauseJobRequest{JobId: "j"}); return err }, want: codes.FailedPrecondition},
		{name: "cancel twice", call: func() error {
			_, err := client.CancelJob(t.Context(), &spoolv1.CancelJobRequest{JobId: "j"})
			return err
		}, want: codes.FailedPrecondition},
		{name: "unknown job", call: func() error {
			_, err := client.ResumeJob(t.Context(), &spoolv1.ResumeJobRequest{JobId: "x"})
			return err
		}, want: codes.NotFound},
		{name: "no job id", call: func() error { _, err := client.CancelJob(t.Context(), &spoolv1.CancelJobRequest{}); return err }, want: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, status.Code(tt.call()))
		})
	}
}

// deadLetters serves scripted entries and records redrives.
type deadLetters struct {
	entries  []deadletter.Entry
	redriven []string
	err      error
}

func (d *deadLetters) List(_ context.Context, jobID string, _ int, fn func(deadletter.Entry) error) (deadletter.Summary, error) {
	n := int64(0)
	for _, e := range d.entries {
		if e.JobID != jobID {
			continue
		}
		n++
		if err := fn(e); err != nil {
			return deadletter.Summary{}, err
		}
	}
	return deadletter.Summary{Matched: n, Scanned: int64(len(d.entries)), Complete: true}, d.err
}

func (d *deadLetters) Redrive(_ context.Context, jobID string, _ int) (deadletter.Summary, error) {
	d.redriven = append(d.redriven, jobID)
	return deadletter.Summary{Matched: 1, Scanned: 2, Complete: false, HeldElsewhere: 3}, d.err
}

func TestDeadLetterRPCs(t *testing.T) {
	at := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	dl := &deadLetters{entries: []deadletter.Entry{
		{MessageID: "m1", JobID: "j", Row: 4, Reason: deadletter.Reason{Reason: "gave up", Status: 503, Attempts: 20, Dispatcher: "d", At: at}},
		{MessageID: "m2", JobID: "other", Row: 1},
	}}
	client, _ := serve(t, &fakeJobs{}, newClock(), func(o *dispatchrpc.Options) { o.DeadLetters = dl })

	stream, err := client.ListDeadLetters(t.Context(), &spoolv1.ListDeadLettersRequest{JobId: "j"})
	require.NoError(t, err)
	var got []*spoolv1.ListDeadLettersResponse
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		got = append(got, m)
	}
	want := []*spoolv1.ListDeadLettersResponse{
		{Msg: &spoolv1.ListDeadLettersResponse_Entry{Entry: &spoolv1.DeadLetter{
			JobId: "j", Row: 4, Reason: "gave up", Status: 503, Attempts: 20, DispatcherId: "d", MessageId: "m1", DeadLetteredAt: timestamppb.New(at),
		}}},
		{Msg: &spoolv1.ListDeadLettersResponse_Summary{Summary: &spoolv1.DeadLetterSummary{Matched: 1, Scanned: 2, Complete: true}}},
	}
	require.Empty(t, cmp.Diff(want, got, protocmp.Transform()))

	r, err := client.RedriveDeadLetters(t.Context(), &spoolv1.RedriveDeadLettersRequest{JobId: "j"})
	require.NoError(t, err)
	require.Empty(t, cmp.Diff(&spoolv1.DeadLetterSummary{Matched: 1, Scanned: 2, HeldElsewhere: 3}, r.GetSummary(), protocmp.Transform()))
	require.Equal(t, []string{"j"}, dl.redriven)

	dl.err = errors.New("queue unreachable")
	_, err = client.RedriveDeadLetters(t.Context(), &spoolv1.RedriveDeadLettersRequest{JobId: "j"})
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Contains(t, err.Error(), "1 moved before")
}

func TestDeadLettersUnconfigured(t *testing.T) {
	client, _ := serve(t, &fakeJobs{}, newClock())
	_, err := client.RedriveDeadLetters(t.Context(), &spoolv1.RedriveDeadLettersRequest{JobId: "j"})
	require.Equal(t, codes.Unimplemented, status.Code(err))
	_, err = client.PauseJob(t.Context(), &spoolv1.PauseJobRequest{JobId: "j"})
	require.Equal(t, codes.Unimplemented, status.Code(err))
}

func (c *control) UpdateThreshold(_ context.Context, id string, ch jobstore.ThresholdChange) (*spoolv1.Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.open(id); err != nil {
		return nil, err
	}
	c.job.FailureThreshold = threshold.Update(c.job.GetFailureThreshold(), ch.MaxFailures, ch.MaxFailureRate, ch.MinSettled)
	return c.job, nil
}

func TestUpdateJob(t *testing.T) {
	ctl := &control{job: &spoolv1.Job{JobId: "j", State: spoolv1.JobState_JOB_STATE_SEALED}}
	client, _ := serve(t, &fakeJobs{}, newClock(), func(o *dispatchrpc.Options) { o.Control = ctl })

	r, err := client.UpdateJob(t.Context(), &spoolv1.UpdateJobRequest{JobId: "j", MaxFailureRate: proto.Float64(0.02), MaxFailures: proto.Int64(10)})
	require.NoError(t, err)
	if diff := cmp.Diff(&spoolv1.FailureThreshold{MaxFailureRate: 0.02, MaxFailures: proto.Int64(10)}, r.GetJob().GetFailureThreshold(), protocmp.Transform()); diff != "" {
		t.Errorf("threshold (-want +got):\n%s", diff)
	}
	tests := []struct {
		name string
		req  *spoolv1.UpdateJobRequest
		want codes.Code
	}{
		{name: "no job id", req: &spoolv1.UpdateJobRequest{MaxFailures: proto.Int64(1)}, want: codes.InvalidArgument},
		{name: "nothing to change", req: &spoolv1.UpdateJobRequest{JobId: "j"}, want: codes.InvalidArgument},
		{name: "a rate over 1", req: &spoolv1.UpdateJobRequest{JobId: "j", MaxFailureRate: proto.Float64(2)}, want: codes.InvalidArgument},
		{name: "a negative minimum", req: &spoolv1.UpdateJobRequest{JobId: "j", MinSettled: proto.Int64(-1)}, want: codes.InvalidArgument},
		{name: "unknown job", req: &spoolv1.UpdateJobRequest{JobId: "x", MaxFailures: proto.Int64(1)}, want: codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.UpdateJob(t.Context(), tt.req)
			require.Equal(t, tt.want, status.Code(err))
		})
	}
	ctl.job.State = spoolv1.JobState_JOB_STATE_COMPLETED
	_, err = client.UpdateJob(t.Context(), &spoolv1.UpdateJobRequest{JobId: "j", MaxFailures: proto.Int64(1)})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
}
