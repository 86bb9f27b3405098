package dispatchrpc_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// tableJobs holds several job records; a missing one is not found.
type tableJobs map[string]*spoolv1.Job

func (t tableJobs) Get(_ context.Context, id string) (*spoolv1.Job, error) {
	if j, ok := t[id]; ok {
		return j, nil
	}
	return nil, fmt.Errorf("get job %s: %w", id, jobstore.ErrNotFound)
}

// register is a fixed register of open jobs.
type register struct {
	ids []string
	err error
}

func (r register) List(context.Context) ([]string, error) { return r.ids, r.err }

func TestListOpenJobs(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	job := func(id string, st spoolv1.JobState, age time.Duration) *spoolv1.Job {
		return &spoolv1.Job{JobId: id, State: st, CreatedAt: timestamppb.New(t0.Add(-age))}
	}
	jobs := tableJobs{
		"old-sealed": job("old-sealed", spoolv1.JobState_JOB_STATE_SEALED, time.Hour),
		"new-sealed": job("new-sealed", spoolv1.JobState_JOB_STATE_SEALED, time.Minute),
		"receiving":  job("receiving", spoolv1.JobState_JOB_STATE_RECEIVING, 30*time.Minute),
		"done":       job("done", spoolv1.JobState_JOB_STATE_COMPLETED, time.Second),
	}
	ids := []string{"done", "old-sealed", "expired", "receiving", "new-sealed"}
	tests := []struct {
		name     string
		open     dispatchrpc.OpenJobs
		limit    int32
		wantIDs  []string
		wantOpen int32
		wantCode codes.Code
	}{
		{name: "not final first, newest first", open: register{ids: ids}, wantIDs: []string{"new-sealed", "receiving", "old-sealed", "done"}, wantOpen: 5},
		{name: "limit cuts the list", open: register{ids: ids}, limit: 2, wantIDs: []string{"new-sealed", "receiving"}, wantOpen: 5},
		{name: "empty register", open: register{}, wantIDs: nil},
		{name: "negative limit", open: register{ids: ids}, limit: -1, wantCode: codes.InvalidArgument},
		{name: "register fails", open: register{err: errors.New("throttled")}, wantCode: codes.Unavailable},
		{name: "no register", wantCode: codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, _ := serve(t, jobs, newClock(), func(o *dispatchrpc.Options) { o.OpenJobs = tt.open })
			got, err := client.ListOpenJobs(context.Background(), &spoolv1.ListOpenJobsRequest{Limit: tt.limit})
			if tt.wantCode != codes.OK {
				require.Equal(t, tt.wantCode, status.Code(err), "%v", err)
				return
			}
			require.NoError(t, err)
			var gotIDs []string
			for _, j := range got.GetJobs() {
				gotIDs = append(gotIDs, j.GetJobId())
			}
			require.Equal(t, tt.wantIDs, gotIDs)
			require.Equal(t, tt.wantOpen, got.GetOpen())
		})
	}
}

func TestListOpenJobsFailsOnAFailedRead(t *testing.T) {
	jobs := &fakeJobs{err: errors.New("table unavailable")}
	client, _ := serve(t, jobs, newClock(), func(o *dispatchrpc.Options) { o.OpenJobs = register{ids: []string{"a", "b"}} })
	_, err := client.ListOpenJobs(context.Background(), &spoolv1.ListOpenJobsRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}
