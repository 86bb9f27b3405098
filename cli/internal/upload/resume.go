package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Jobs is the part of the ingest client a resumable upload asks where to
// resume.
type Jobs interface {
	GetJob(ctx context.Context, in *spoolv1.GetJobRequest, opts ...grpc.CallOption) (*spoolv1.GetJobResponse, error)
}

// Resume configures SendResumable.
type Resume struct {
	Jobs Jobs
	// Key is the job key of the file: the -job-key, or sha256:<hex>.
	Key string
	// For bounds the time spent resuming, from the first break.
	For time.Duration
	// MinBackoff and MaxBackoff bound the pause before each attempt; it
	// doubles from one to the other.
	MinBackoff, MaxBackoff time.Duration
	// OnBreak is told each resume: the row it continues after, the
	// attempt (from 1) and why the stream broke.
	OnBreak func(afterRow int64, attempt int, err error)
	// Now and Sleep default to the clock; tests replace them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

func (r *Resume) defaults() {
	if r.MinBackoff <= 0 {
		r.MinBackoff = 500 * time.Millisecond
	}
	if r.MaxBackoff < r.MinBackoff {
		r.MaxBackoff = max(10*time.Second, r.MinBackoff)
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Sleep == nil {
		r.Sleep = sleep
	}
	if r.OnBreak == nil {
		r.OnBreak = func(int64, int, error) {}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Resumable reports whether a failed stream may be resumed: the
// connection or the ingestor went away, not the file or the request.
func Resumable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted:
		return true
	case codes.Canceled:
		// Our context is live, so the ingestor cancelled: it is stopping.
		return true
	}
	return false
}

// SendResumable sends f like Send and, when the stream breaks for a
// reason that is not the file's, asks the ingestor where the job's
// durable rows end, seeks f there and continues with a resume header,
// with exponential backoff, for up to r.For. Rows sent twice across a break
// are harmless: the dispatchers' delivery ledger suppresses the second
// copy of a transaction.
func SendResumable(ctx context.Context, c Client, header *spoolv1.FileHeader, f io.ReadSeeker, chunkSize int, sent func(int64), r Resume) (*spoolv1.StreamFileResponse, error) {
	r.defaults()
	var (
		giveUp  time.Time
		backoff = r.MinBackoff
		offset  int64
	)
	started := false
	progress := func(n int64) {
		started = true
		if sent != nil {
			sent(offset + n)
		}
	}
	for attempt := 1; ; attempt++ {
		resp, err := Send(ctx, c, header, f, chunkSize, progress)
		if err == nil {
			return resp, nil
		}
		// A first stream that never got a byte across did not break: the
		// ingestor was never reached, which retrying will not fix.
		if !Resumable(ctx, err) || !started {
			return nil, err
		}
		if giveUp.IsZero() {
			giveUp = r.Now().Add(r.For)
		}
		for {
			if !r.Now().Before(giveUp) {
				return nil, fmt.Errorf("gave up resuming after %s: %w", r.For, err)
			}
			if serr := r.Sleep(ctx, backoff); serr != nil {
				return nil, errors.Join(err, serr)
			}
			backoff = min(2*backoff, r.MaxBackoff)
			j, gerr := r.Jobs.GetJob(ctx, &spoolv1.GetJobRequest{JobKey: r.Key})
			switch {
			case status.Code(gerr) == codes.NotFound:
				// The job was never created: start over.
				header.Resume, offset = nil, 0
			case gerr != nil && Resumable(ctx, gerr):
				err = gerr
				continue
			case gerr != nil:
				return nil, fmt.Errorf("ask where to resume job %s: %w", r.Key, rpcerr.Readable(gerr))
			default:
				job := j.GetJob()
				switch job.GetState() {
				case spoolv1.JobState_JOB_STATE_SEALED, spoolv1.JobState_JOB_STATE_COMPLETED:
					// The break came after the job was sealed.
					return &spoolv1.StreamFileResponse{
						JobId: job.GetJobId(), Job: job, RowsReceived: job.GetRowsReceived(),
						RowsPublished: job.GetRowsPublished(), RowsRejected: job.GetRowsRejected(),
					}, nil
				case spoolv1.JobState_JOB_STATE_RECEIVING:
					header.Resume = &spoolv1.Resume{AfterRow: job.GetResumeRow(), Offset: job.GetResumeOffset()}
					offset = job.GetResumeOffset()
				default:
					return nil, fmt.Errorf("job %s ended %s while resuming: %s: %w", job.GetJobId(), job.GetState(), job.GetStateReason(), err)
				}
			}
			break
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return nil, fmt.Errorf("seek to byte %d to resume: %w", offset, err)
		}
		r.OnBreak(header.GetResume().GetAfterRow(), attempt, err)
	}
}
