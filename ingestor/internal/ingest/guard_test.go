package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestJobGuardsFromTheHeader(t *testing.T) {
	jobs, pub := newFakeJobs(), &fakePub{}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(pub), MaxErrors: 10, Profiles: profiles(t), Now: func() time.Time { return now }})
	at := timestamppb.New(now.Add(48 * time.Hour))
	resp, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{
		Profile:          "lenient",
		FailureThreshold: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(3)},
		Canary:           &spoolv1.Canary{Rows: 2, ContinueWhenClean: true, Released: true},
		DeliverAfter:     at,
	}), chunkMsg("id,amount\nE1,1\nX2,2\nE3,3\n"))
	require.NoError(t, err)
	j := jobs.only(t)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
	require.EqualValues(t, 3, j.GetFailureThreshold().GetMaxFailures())
	require.EqualValues(t, 2, j.GetCanary().GetRows())
	require.True(t, j.GetCanary().GetContinueWhenClean())
	require.False(t, j.GetCanary().GetReleased(), "a header cannot release its own canary")
	require.EqualValues(t, 1, j.GetCanary().GetSize(), "row 2 was left out, so the canary has one row")
	require.True(t, proto.Equal(at, j.GetDeliverAfter()))
	require.EqualValues(t, 2, resp.GetRowsPublished())

	_, err = send(context.Background(), c, hdr(&spoolv1.FileHeader{
		Columns: []string{"id"}, DeliverAfter: timestamppb.New(now.Add(73 * time.Hour)),
	}), chunkMsg("E1\n"))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.ErrorContains(t, err, "more than the ingestor's -max-deliver-after of 72h0m0s")
}
