package dispatchrpc

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// OpenJobs is the table's register of open jobs (openjobs.Register).
type OpenJobs interface {
	List(ctx context.Context) ([]string, error)
}

// Bounds of ListOpenJobs. The register holds a few hundred jobs at most,
// but each listed job costs a read of its record, so a call reads at most
// maxOpenRead records, openReaders at a time.
const (
	defaultOpenLimit = 50
	maxOpenLimit     = 500
	maxOpenRead      = 500
	openReaders      = 8
)

// ListOpenJobs implements spoolv1.DispatchServiceServer.
//
// The jobs in progress are served from the register of open jobs rather
// than from what this dispatcher works on: the register is shared, so one
// call to any dispatcher answers for the fleet, and it already exists for
// the counter repair, so nothing new is written on the delivery path. Its
// entries outlive a job's end by a repair interval or so; the records
// carry their state, and the final ones are sorted last.
func (s *Server) ListOpenJobs(ctx context.Context, req *spoolv1.ListOpenJobsRequest) (*spoolv1.ListOpenJobsResponse, error) {
	if s.o.OpenJobs == nil {
		return nil, status.Error(codes.Unimplemented, "this dispatcher has no register of open jobs")
	}
	limit, err := pageSize("limit", req.GetLimit(), defaultOpenLimit, maxOpenLimit)
	if err != nil {
		return nil, err
	}
	ids, err := s.o.OpenJobs.List(ctx)
	if err != nil {
		s.o.Log.ErrorContext(ctx, "list open jobs", "error", err)
		return nil, status.Error(codes.Unavailable, "list open jobs: the job table did not answer")
	}
	open := len(ids)
	if len(ids) > maxOpenRead {
		ids = ids[:maxOpenRead]
	}
	jobs, err := s.readJobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(jobs, func(a, b *spoolv1.Job) int {
		if fa, fb := isFinal(a.GetState()), isFinal(b.GetState()); fa != fb {
			if fa {
				return 1
			}
			return -1
		}
		if c := b.GetCreatedAt().AsTime().Compare(a.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetJobId(), b.GetJobId())
	})
	if len(jobs) > limit {
		jobs = jobs[:limit]
	}
	return &spoolv1.ListOpenJobsResponse{Jobs: jobs, Open: int32(min(open, 1<<31-1))}, nil
}

// readJobs reads the records of ids, a few at a time, each bounded by
// ReadTimeout. A job gone from the table (expired) is left out; any other
// failed read fails the call, since a partial list would pass for the
// whole fleet.
func (s *Server) readJobs(ctx context.Context, ids []string) ([]*spoolv1.Job, error) {
	var (
		mu    sync.Mutex
		jobs  []*spoolv1.Job
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, openReaders)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, s.o.ReadTimeout)
			defer cancel()
			j, err := s.jobs.Get(rctx, id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, jobstore.ErrNotFound):
			case err != nil:
				if first == nil {
					first = err
				}
			default:
				jobs = append(jobs, j)
			}
		})
	}
	wg.Wait()
	if first != nil {
		s.o.Log.ErrorContext(ctx, "read open jobs", "error", first)
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Error(codes.Unavailable, "read open jobs: the job table did not answer")
	}
	return jobs, nil
}
