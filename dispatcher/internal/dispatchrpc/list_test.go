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

// jobIndex answers every listing with ids and next, and keeps the filter
// it was asked with.
type jobIndex struct {
	ids  []string
	next string
	err  error
	got  *jobstore.ListFilter
}

func (x *jobIndex) List(_ context.Context, f jobstore.ListFilter) ([]string, string, error) {
	x.got = &f
	return x.ids, x.next, x.err
}

func TestListJobs(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	job := func(id string, age time.Duration) *spoolv1.Job {
		return &spoolv1.Job{JobId: id, State: spoolv1.JobState_JOB_STATE_COMPLETED, CreatedAt: timestamppb.New(t0.Add(-age))}
	}
	jobs := tableJobs{"a": job("a", time.Hour), "b": job("b", time.Minute), "c": job("c", time.Minute)}
	sealed := spoolv1.JobState_JOB_STATE_SEALED
	tests := []struct {
		name       string
		index      *jobIndex
		req        *spoolv1.ListJobsRequest
		wantIDs    []string
		wantNext   string
		wantFilter jobstore.ListFilter
		wantCode   codes.Code
	}{
		{
			name:  "in the index's order, a vanished job left out",
			index: &jobIndex{ids: []string{"c", "b", "gone", "a"}, next: "tok2"},
			req:   &spoolv1.ListJobsRequest{PageToken: "tok1"}, wantIDs: []string{"c", "b", "a"}, wantNext: "tok2",
			wantFilter: jobstore.ListFilter{Limit: 50, Token: "tok1"},
		},
		{
			name:  "filters passed on, page size capped",
			index: &jobIndex{},
			req: &spoolv1.ListJobsRequest{
				States: []spoolv1.JobState{sealed}, PageSize: 10_000,
				CreatedAfter: timestamppb.New(t0.Add(-time.Hour)), CreatedBefore: timestamppb.New(t0),
			},
			wantFilter: jobstore.ListFilter{Limit: 500, States: []spoolv1.JobState{sealed}, After: t0.Add(-time.Hour), Before: t0},
		},
		{name: "negative page size", index: &jobIndex{}, req: &spoolv1.ListJobsRequest{PageSize: -1}, wantCode: codes.InvalidArgument},
		{name: "not a state", index: &jobIndex{}, req: &spoolv1.ListJobsRequest{States: []spoolv1.JobState{0}}, wantCode: codes.InvalidArgument},
		{name: "bad token", index: &jobIndex{err: jobstore.ErrBadToken}, req: &spoolv1.ListJobsRequest{PageToken: "x"}, wantCode: codes.InvalidArgument},
		{name: "table fails", index: &jobIndex{err: errors.New("throttled")}, req: &spoolv1.ListJobsRequest{}, wantCode: codes.Unavailable},
		{name: "no index", req: &spoolv1.ListJobsRequest{}, wantCode: codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, _ := serve(t, jobs, newClock(), func(o *dispatchrpc.Options) {
				if tt.index != nil {
					o.JobList = tt.index
				}
			})
			got, err := client.ListJobs(context.Background(), tt.req)
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
			require.Equal(t, tt.wantNext, got.GetNextPageToken())
			require.Equal(t, tt.wantFilter.Limit, tt.index.got.Limit)
			require.Equal(t, tt.wantFilter.Token, tt.index.got.Token)
			require.Equal(t, tt.wantFilter.States, tt.index.got.States)
			require.True(t, tt.wantFilter.After.Equal(tt.index.got.After))
			require.True(t, tt.wantFilter.Before.Equal(tt.index.got.Before))
		})
	}
}

// renderer renders an envelope as its row's number and first field.
type renderer struct{}

func (renderer) Render(e *spoolv1.Envelope) (*spoolv1.RenderedRequest, error) {
	return &spoolv1.RenderedRequest{Body: fmt.Sprintf("%d:%s", e.GetRow(), e.GetFields()[0].GetValue())}, nil
}

// RenderRequests renders a dry run's named envelopes and refuses a version
// 2 envelope, whose values it cannot name without its job.
func TestRenderRequests(t *testing.T) {
	named := &spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "dry-run", Row: 1, Fields: []*spoolv1.Field{{Name: "id", Value: "e1"}}}
	unnamed := &spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, JobId: "job", Row: 2, Values: []string{"e2"}}
	tests := []struct {
		name      string
		envelopes []*spoolv1.Envelope
		want      []string
		wantErr   string
	}{
		{name: "named", envelopes: []*spoolv1.Envelope{named}, want: []string{"1:e1"}},
		{name: "version 2", envelopes: []*spoolv1.Envelope{named, unnamed}, wantErr: "render row 2: a version 2 envelope"},
	}
	s := dispatchrpc.New(nil, dispatchrpc.Options{Renderer: renderer{}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.RenderRequests(t.Context(), &spoolv1.RenderRequestsRequest{Envelopes: tt.envelopes})
			if tt.wantErr != "" {
				require.Equal(t, codes.InvalidArgument, status.Code(err))
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, r := range resp.GetRequests() {
				got = append(got, r.GetBody())
			}
			require.Equal(t, tt.want, got)
		})
	}
}
