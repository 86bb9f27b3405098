package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestJobs(t *testing.T) {
	h := newHarness(t)
	var got *spoolv1.ListJobsRequest
	paused := job(spoolv1.JobState_JOB_STATE_SEALED, 40, 2, 100)
	paused.JobId, paused.Paused, paused.Unknown, paused.DeadLettered = "job-2", true, 1, 3
	h.dispatch(t, dispB, &spooltest.Dispatch{List: func(req *spoolv1.ListJobsRequest) (*spoolv1.ListJobsResponse, error) {
		got = req
		return &spoolv1.ListJobsResponse{
			Jobs:          []*spoolv1.Job{paused, job(spoolv1.JobState_JOB_STATE_COMPLETED, 98, 2, 100)},
			NextPageToken: "NEXT",
		}, nil
	}})
	require.NoError(t, h.run("jobs", "-dispatcher-addrs", dispA+","+dispB, "-state", "sealed,Completed", "-since", "24h", "-limit", "2", "-page-token", "PREV"))

	require.Empty(t, cmp.Diff(&spoolv1.ListJobsRequest{
		States:       []spoolv1.JobState{spoolv1.JobState_JOB_STATE_SEALED, spoolv1.JobState_JOB_STATE_COMPLETED},
		CreatedAfter: timestamppb.New(time.Date(2026, 11, 23, 9, 0, 1, 0, time.UTC)), PageSize: 2, PageToken: "PREV",
	}, got, protocmp.Transform()))
	require.Equal(t, `JOB    STATE          SETTLED  %       FAILED  UNKNOWN  DLQ  AGE    FILE
job-2  SEALED paused  45/100   45.0%   2       1        3    1h00m  payroll.csv
job-1  COMPLETED      100/100  100.0%  2       0        0    1h00m  payroll.csv
more: spool jobs -page-token NEXT (with the same filters)
`, h.stdout.String())
}

func TestJobsRefusesAnUnknownState(t *testing.T) {
	h := newHarness(t)
	require.ErrorContains(t, h.run("jobs", "-state", "done"), `-state "done": not a job state`)
}
