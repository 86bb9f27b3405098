package dispatchrpc

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// JobList pages through the job table's jobs-by-state index
// (jobstore.Store).
type JobList interface {
	List(ctx context.Context, f jobstore.ListFilter) (ids []string, next string, err error)
}

// Renderer builds the requests a dispatcher would send (deliver.Client).
type Renderer interface {
	Render(e *spoolv1.Envelope) (*spoolv1.RenderedRequest, error)
}

// Bounds of a ListJobs page; each job listed costs a read of its record
// and counters.
const (
	defaultListPage = 50
	maxListPage     = 500
	// maxRender bounds the envelopes of one RenderRequests.
	maxRender = 100
)

// pageSize reads the size of a page (or a limit) a caller asked for, named
// field in its error: 0 asks for def, more than most gets most, and a
// negative size is refused.
func pageSize(field string, asked int32, def, most int) (int, error) {
	switch n := int(asked); {
	case n < 0:
		return 0, status.Errorf(codes.InvalidArgument, "%s %d: want 0 or more", field, n)
	case n == 0:
		return def, nil
	default:
		return min(n, most), nil
	}
}

// ListJobs implements spoolv1.DispatchServiceServer.
func (s *Server) ListJobs(ctx context.Context, req *spoolv1.ListJobsRequest) (*spoolv1.ListJobsResponse, error) {
	if s.o.JobList == nil {
		return nil, status.Error(codes.Unimplemented, "this dispatcher cannot list jobs")
	}
	limit, err := pageSize("page_size", req.GetPageSize(), defaultListPage, maxListPage)
	if err != nil {
		return nil, err
	}
	f := jobstore.ListFilter{Limit: limit, Token: req.GetPageToken()}
	for _, st := range req.GetStates() {
		if !slices.Contains(jobstore.ListStates, st) {
			return nil, status.Errorf(codes.InvalidArgument, "state %v: not a job state", st)
		}
		f.States = append(f.States, st)
	}
	if t := req.GetCreatedAfter(); t != nil {
		f.After = t.AsTime()
	}
	if t := req.GetCreatedBefore(); t != nil {
		f.Before = t.AsTime()
	}
	ids, next, err := s.o.JobList.List(ctx, f)
	switch {
	case errors.Is(err, jobstore.ErrBadToken):
		return nil, status.Error(codes.InvalidArgument, "page_token: not one a listing returned")
	case err != nil:
		s.o.Log.ErrorContext(ctx, "list jobs", "error", err)
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Error(codes.Unavailable, "list jobs: the job table did not answer")
	}
	jobs, err := s.readJobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	// Read in parallel: put back in the index's order.
	slices.SortFunc(jobs, func(a, b *spoolv1.Job) int {
		if c := b.GetCreatedAt().AsTime().Compare(a.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(b.GetJobId(), a.GetJobId())
	})
	return &spoolv1.ListJobsResponse{Jobs: jobs, NextPageToken: next}, nil
}

// RenderRequests implements spoolv1.DispatchServiceServer.
func (s *Server) RenderRequests(_ context.Context, req *spoolv1.RenderRequestsRequest) (*spoolv1.RenderRequestsResponse, error) {
	if s.o.Renderer == nil {
		return nil, status.Error(codes.Unimplemented, "this dispatcher cannot render requests")
	}
	if n := len(req.GetEnvelopes()); n > maxRender {
		return nil, status.Errorf(codes.InvalidArgument, "%d envelopes: at most %d", n, maxRender)
	}
	out := &spoolv1.RenderRequestsResponse{}
	for _, e := range req.GetEnvelopes() {
		if e.GetVersion() == spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2 {
			// Its values have no names without its job, which a dry run
			// does not create: the dry run's preview is already named.
			return nil, status.Errorf(codes.InvalidArgument, "render row %d: a version 2 envelope, whose values are named only by its job's columns: render a dry run's preview (StreamFile with dry_run), whose envelopes are named", e.GetRow())
		}
		r, err := s.o.Renderer.Render(e)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "render row %d: %v", e.GetRow(), err)
		}
		out.Requests = append(out.Requests, r)
	}
	return out, nil
}
