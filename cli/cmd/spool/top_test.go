package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// statusDispatch answers GetDispatcherStatus and ListOpenJobs.
type statusDispatch struct {
	spoolv1.UnimplementedDispatchServiceServer
	id   string
	jobs []*spoolv1.Job
}

func (d *statusDispatch) GetDispatcherStatus(context.Context, *spoolv1.GetDispatcherStatusRequest) (*spoolv1.GetDispatcherStatusResponse, error) {
	return &spoolv1.GetDispatcherStatusResponse{DispatcherId: d.id, Flow: &spoolv1.FlowControl{
		ConcurrencyLimit: 12, InFlight: 5, RateLimit: 40, BreakerState: spoolv1.BreakerState_BREAKER_STATE_HALF_OPEN, BreakerOpens: 1,
	}}, nil
}

func (d *statusDispatch) ListOpenJobs(context.Context, *spoolv1.ListOpenJobsRequest) (*spoolv1.ListOpenJobsResponse, error) {
	return &spoolv1.ListOpenJobsResponse{Jobs: d.jobs, Open: int32(len(d.jobs))}, nil
}

func TestTop(t *testing.T) {
	h := newHarness(t)
	d := &statusDispatch{id: "d-a", jobs: []*spoolv1.Job{{
		JobId: "job-1", FileName: "payroll.csv", State: spoolv1.JobState_JOB_STATE_SEALED, Total: 200, Delivered: 50,
	}}}
	h.net.Serve(t, dispA, func(s grpc.ServiceRegistrar) { spoolv1.RegisterDispatchServiceServer(s, d) })
	// The addresses come from the environment (or stack.env), as for watch;
	// dispB has nobody listening.
	h.env["SPOOL_DISPATCHER_ADDRS"] = dispA + "," + dispB

	require.NoError(t, h.run("top", "-once"))
	out := h.stdout.String()
	require.NotContains(t, out, "\x1b", "a snapshot for a pipe has no escape codes")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 8, out)
	require.Contains(t, lines[0], "2 dispatchers, 1 unreachable")
	require.Equal(t, "127.0.0.1:2  d-a     12          5        40/s  half-open      1  -/-", lines[2])
	require.True(t, strings.HasPrefix(lines[3], "127.0.0.1:3  unreachable: Unavailable: "), lines[3])
	require.Equal(t, "JOBS  1 open", lines[5])
	require.Equal(t, "job-1  SEALED   50/200  25.0%     -        0       0    0  payroll.csv", lines[7])
}

func TestTopUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{args: []string{"top", "extra"}, want: "takes no arguments"},
		{args: []string{"top", "-jobs", "0"}, want: "-jobs 0"},
		{args: []string{"top", "-interval", "0s"}, want: "must be positive"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			h := newHarness(t)
			err := h.run(tt.args...)
			var usage *usageError
			require.ErrorAs(t, err, &usage)
			require.ErrorContains(t, err, tt.want)
		})
	}
}
