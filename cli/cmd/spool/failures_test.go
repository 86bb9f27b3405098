package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// controlDispatch is a dispatcher serving the dead-letter and job control
// calls, recording what it was asked.
type controlDispatch struct {
	spoolv1.UnimplementedDispatchServiceServer
	entries []*spoolv1.DeadLetter
	summary *spoolv1.DeadLetterSummary
	job     *spoolv1.Job
	err     error
	asked   []string
}

func (d *controlDispatch) ListDeadLetters(req *spoolv1.ListDeadLettersRequest, stream grpc.ServerStreamingServer[spoolv1.ListDeadLettersResponse]) error {
	d.asked = append(d.asked, "list "+req.GetJobId())
	for _, e := range d.entries {
		if err := stream.Send(&spoolv1.ListDeadLettersResponse{Msg: &spoolv1.ListDeadLettersResponse_Entry{Entry: e}}); err != nil {
			return err
		}
	}
	return stream.Send(&spoolv1.ListDeadLettersResponse{Msg: &spoolv1.ListDeadLettersResponse_Summary{Summary: d.summary}})
}

func (d *controlDispatch) RedriveDeadLetters(_ context.Context, req *spoolv1.RedriveDeadLettersRequest) (*spoolv1.RedriveDeadLettersResponse, error) {
	d.asked = append(d.asked, "redrive "+req.GetJobId())
	return &spoolv1.RedriveDeadLettersResponse{Summary: d.summary}, d.err
}

func (d *controlDispatch) PauseJob(_ context.Context, req *spoolv1.PauseJobRequest) (*spoolv1.PauseJobResponse, error) {
	d.asked = append(d.asked, "pause "+req.GetJobId())
	d.job.Paused = true
	return &spoolv1.PauseJobResponse{Job: d.job}, d.err
}

func (d *controlDispatch) ResumeJob(_ context.Context, req *spoolv1.ResumeJobRequest) (*spoolv1.ResumeJobResponse, error) {
	d.asked = append(d.asked, "resume "+req.GetJobId())
	d.job.Paused = false
	return &spoolv1.ResumeJobResponse{Job: d.job}, d.err
}

func (d *controlDispatch) CancelJob(_ context.Context, req *spoolv1.CancelJobRequest) (*spoolv1.CancelJobResponse, error) {
	if d.err != nil {
		return nil, d.err
	}
	d.asked = append(d.asked, "cancel "+req.GetJobId()+" "+req.GetReason())
	d.job.State = spoolv1.JobState_JOB_STATE_CANCELLED
	return &spoolv1.CancelJobResponse{Job: d.job}, nil
}

func serveControl(t testing.TB, h *harness, addr string, d *controlDispatch) {
	t.Helper()
	h.net.Serve(t, addr, func(s grpc.ServiceRegistrar) { spoolv1.RegisterDispatchServiceServer(s, d) })
}

func TestDeadLettersCommand(t *testing.T) {
	h := newHarness(t)
	at := time.Date(2026, 11, 24, 9, 30, 0, 0, time.UTC)
	d := &controlDispatch{
		entries: []*spoolv1.DeadLetter{
			{JobId: "job-1", Row: 7, Reason: "gave up after 20 attempts;\nlast: 503 Service Unavailable", Status: 503, Attempts: 20, DeadLetteredAt: timestamppb.New(at)},
			{JobId: "job-1", Row: 0, Reason: "undecodable message"},
		},
		summary: &spoolv1.DeadLetterSummary{Matched: 2, Scanned: 40, Complete: true},
	}
	serveControl(t, h, dispB, d)
	// The first dispatcher is down: the next one answers.
	require.NoError(t, h.run("deadletters", "-dispatcher-addrs", dispA+","+dispB, "job-1"))
	require.Equal(t, "ROW  STATUS  ATTEMPTS  DEAD-LETTERED         REASON\n"+
		"7    503     20        2026-11-24T09:30:00Z  gave up after 20 attempts; last: 503 Service Unavailable\n"+
		"0    -       0         -                     undecodable message\n"+
		"2 dead letters; 40 dead-letter messages read, the whole queue\n", h.stdout.String())
	require.Equal(t, []string{"list job-1"}, d.asked)
}

func TestRedriveCommand(t *testing.T) {
	tests := []struct {
		name    string
		summary *spoolv1.DeadLetterSummary
		want    string
	}{
		{name: "whole queue", summary: &spoolv1.DeadLetterSummary{Matched: 3, Scanned: 3, Complete: true},
			want: "3 moved back to the queue; 3 dead-letter messages read, the whole queue\n"},
		{name: "bounded", summary: &spoolv1.DeadLetterSummary{Matched: 1, Scanned: 100},
			want: "1 moved back to the queue; 100 dead-letter messages read; the scan stopped at its bound: run it again for the rest\n"},
		{name: "held elsewhere", summary: &spoolv1.DeadLetterSummary{Matched: 1, Scanned: 5, HeldElsewhere: 4},
			want: "1 moved back to the queue; 5 dead-letter messages read; 4 were held by another reader: run it again for the rest\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			serveControl(t, h, dispA, &controlDispatch{summary: tt.summary})
			require.NoError(t, h.run("redrive", "-dispatcher-addrs", dispA, "job-1"))
			require.Equal(t, tt.want, h.stdout.String())
		})
	}
}

func TestPauseResumeCancelCommands(t *testing.T) {
	h := newHarness(t)
	d := &controlDispatch{job: &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_SEALED}}
	serveControl(t, h, dispA, d)
	h.env["SPOOL_DISPATCHER_ADDRS"] = dispA
	require.NoError(t, h.run("pause", "job-1"))
	require.NoError(t, h.run("resume", "job-1"))
	require.NoError(t, h.run("cancel", "-reason", "wrong file", "job-1"))
	require.Equal(t, []string{"pause job-1", "resume job-1", "cancel job-1 wrong file"}, d.asked)
	require.Contains(t, h.stdout.String(), "job job-1 is SEALED (paused: by an operator)\n")
	require.Contains(t, h.stdout.String(), "job job-1 is CANCELLED\n")

	d.err = status.Error(codes.FailedPrecondition, "end job job-1 as CANCELLED: job is not in the required state")
	err := h.run("cancel", "job-1")
	require.ErrorContains(t, err, "cancel job job-1")
	require.ErrorContains(t, err, "not in the required state")

	var u *usageError
	require.ErrorAs(t, h.run("pause"), &u)
}
