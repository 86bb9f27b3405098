package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/threshold"
)

func TestSendGuardFlags(t *testing.T) {
	h := newHarness(t)
	ingest := &spooltest.Ingest{Answer: answer}
	h.ingest(t, ingest)
	h.env["SPOOL_CANARY"] = "7" // per file: never from the environment
	path := writeFile(t, "nov.csv", "id,amount\n1,2.50\n")
	require.NoError(t, h.run("send", "-ingestor-addr", ingestorAddr, "-no-watch", "-max-failure-rate", "2%", "-max-failures", "10",
		"-min-settled", "200", "-canary", "50", "-canary-continue", "-deliver-after", "2026-12-01T06:00:00Z", path))
	header, _ := ingest.Received()
	want := &spoolv1.FileHeader{
		FailureThreshold: &spoolv1.FailureThreshold{MaxFailureRate: 0.02, MaxFailures: proto.Int64(10), MinSettled: 200},
		Canary:           &spoolv1.Canary{Rows: 50, ContinueWhenClean: true},
	}
	if diff := cmp.Diff(want, header, protocmp.Transform(), protocmp.IgnoreFields(&spoolv1.FileHeader{}, "file_name", "csv", "control", "deliver_after")); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	require.Equal(t, time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC), header.GetDeliverAfter().AsTime())

	for _, args := range [][]string{
		{"-max-failure-rate", "2"}, {"-max-failures", "-1"}, {"-canary", "-5"}, {"-canary-continue"}, {"-deliver-after", "tomorrow"},
	} {
		var u *usageError
		require.ErrorAs(t, h.run(append(append([]string{"send", "-ingestor-addr", ingestorAddr, "-no-watch"}, args...), path)...), &u, "%v", args)
	}
}

func (d *controlDispatch) UpdateJob(_ context.Context, req *spoolv1.UpdateJobRequest) (*spoolv1.UpdateJobResponse, error) {
	d.asked = append(d.asked, "update "+req.GetJobId())
	d.job.FailureThreshold = threshold.Update(d.job.GetFailureThreshold(), req.MaxFailures, req.MaxFailureRate, req.MinSettled)
	d.job.Paused = false
	return &spoolv1.UpdateJobResponse{Job: d.job}, d.err
}

func TestUpdateCommand(t *testing.T) {
	h := newHarness(t)
	d := &controlDispatch{job: &spoolv1.Job{
		JobId: "job-1", State: spoolv1.JobState_JOB_STATE_SEALED, Paused: true,
		FailureThreshold: &spoolv1.FailureThreshold{MaxFailureRate: 0.02, MaxFailures: proto.Int64(3)},
	}}
	serveControl(t, h, dispA, d)
	h.env["SPOOL_DISPATCHER_ADDRS"] = dispA
	require.NoError(t, h.run("update", "-max-failure-rate", "10%", "-max-failures", "off", "job-1"))
	require.Equal(t, []string{"update job-1"}, d.asked)
	require.Equal(t, "job job-1 is SEALED; pauses at more than 10% of at least 50 settled rows\n", h.stdout.String())

	var u *usageError
	require.ErrorAs(t, h.run("update", "job-1"), &u, "nothing to change")
	require.ErrorAs(t, h.run("update", "-max-failure-rate", "150%", "job-1"), &u)
}
