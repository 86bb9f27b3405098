package ingest

import (
	"context"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// deadlineJobs gives every job store call its own deadline. A stream's
// context lives as long as its file takes, hours for a big one, and a
// GetJob caller may set none: without one, a table call that hangs (a
// connection that never answers) would hold the stream, and its lease,
// forever.
type deadlineJobs struct {
	jobs    Jobs
	timeout time.Duration
}

func withDeadlines(jobs Jobs, timeout time.Duration) Jobs {
	return &deadlineJobs{jobs: jobs, timeout: timeout}
}

func (d *deadlineJobs) Start(ctx context.Context, j *spoolv1.Job, stream string) (*spoolv1.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.Start(ctx, j, stream)
}

func (d *deadlineJobs) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.Get(ctx, id)
}

func (d *deadlineJobs) GetByKey(ctx context.Context, key string) (*spoolv1.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.GetByKey(ctx, key)
}

func (d *deadlineJobs) ExpireIfAbandoned(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.ExpireIfAbandoned(ctx, j)
}

func (d *deadlineJobs) Takeover(ctx context.Context, id, stream string) (*spoolv1.Job, jobstore.Checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.Takeover(ctx, id, stream)
}

func (d *deadlineJobs) RecordIngest(ctx context.Context, id string, in jobstore.Ingest) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.RecordIngest(ctx, id, in)
}

func (d *deadlineJobs) Seal(ctx context.Context, id string, in jobstore.Ingest) (*spoolv1.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.Seal(ctx, id, in)
}

func (d *deadlineJobs) EndStream(ctx context.Context, id, stream string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.jobs.EndStream(ctx, id, stream, state, reason)
}
