package ingest

import (
	"context"
	"errors"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/admit"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/decimal"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/tracing"
)

// job is the state of one stream once it owns its job.
type job struct {
	id        string
	stream    string
	cols      []string
	version   spoolv1.EnvelopeVersion // of the envelopes it writes
	rows      *admit.Rows
	pub       Publisher
	maxErrors int
	every     int64
	base      jobstore.Checkpoint // the figures of rows up to base.Row
	hash      hash.Hash           // nil when the file's hash is not kept
	sum       *decimal.Sum

	// Counted over rows past base.Row only: rows up to it were counted by
	// the stream that checkpointed them.
	received    atomic.Int64
	rejected    atomic.Int64
	handed      atomic.Int64 // rows handed to the publisher
	republished atomic.Int64 // rows up to base.Row handed again
	canary      atomic.Int64 // handed rows numbered within the canary
	canaryRows  int64        // the job's canary; 0: none
	errors      []*spoolv1.RowError
	onReject    func() // nil: nobody is told

	mu          sync.Mutex
	checkpoints []jobstore.Checkpoint // candidates, oldest first
	committed   jobstore.Checkpoint
}

// newJob returns the job of stream st, which publishes to pub.
func (s *Server) newJob(st *streamState, o *opened, pub Publisher) (*job, error) {
	sum, err := decimal.Parse(st.base.AmountSum)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "checkpoint amount sum: %v", err)
	}
	return &job{
		id: st.job.GetJobId(), stream: st.id, cols: o.cols, version: s.cfg.EnvelopeVersion, rows: o.rows, pub: pub,
		maxErrors: s.cfg.MaxErrors, every: s.cfg.CheckpointEvery,
		base: st.base, committed: st.base, hash: o.hash, sum: sum, canaryRows: o.header.GetCanary().GetRows(),
	}, nil
}

// errInvalidRows ends a stream whose file is rejected for its rows.
var errInvalidRows = errors.New("invalid rows under the reject-file policy")

// stopCause returns why the stream was stopped from within (fenced, or
// its progress not recorded), nil when it was not.
func stopCause(ctx context.Context) error {
	if ctx.Err() == nil {
		// The common case, checked twice a row: no cause to inspect (and
		// errors.As below allocates).
		return nil
	}
	cause := context.Cause(ctx)
	var unrecorded *unrecordedError
	if errors.Is(cause, errFenced) || errors.As(cause, &unrecorded) {
		return cause
	}
	return nil
}

// run reads every row and publishes the valid ones, then waits until SQS
// acknowledged all of them. Its error is a gRPC status, or the cause the
// stream was stopped with.
func (j *job) run(ctx context.Context, r *csvread.Reader, now func() time.Time) error {
	// Only raw chunks have a hash; rows were split by the client. The
	// first data message decides, once for the whole stream.
	chunked, err := r.Chunked()
	if err != nil {
		return readStatus(ctx, err)
	}
	if !chunked {
		j.hash = nil
	}
	// Every row carries the call's trace context, so that its delivery
	// joins the caller's trace.
	traceparent, tracestate := tracing.Traceparent(ctx)
	envs := newEnvelopes(j.cols, j.version)
	for {
		// A stopped stream stops at its next row, before publishing it. A
		// stream blocked waiting for its client stops when the client
		// sends or goes away; it publishes nothing meanwhile.
		if err := stopCause(ctx); err != nil {
			return err
		}
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return readStatus(ctx, err)
		}
		if err := stopCause(ctx); err != nil {
			return err
		}
		counted := row.Num > j.base.Row
		if counted {
			j.received.Add(1)
		}
		if bad := j.rows.Check(row); bad != nil {
			j.reject(bad, counted)
			j.maybeCheckpoint(row.Num, r.Offset())
			continue
		}
		if j.refusing() {
			// The file is rejected whatever follows; the rest is only read
			// to count and report its invalid rows.
			continue
		}
		e := envs.next(row.Fields)
		key := j.transactionKey(row)
		e.JobId, e.Row = j.id, row.Num
		envs.key(e, key, len(j.rows.BusinessKey()) > 0)
		at := now()
		e.PublishedAt.Seconds, e.PublishedAt.Nanos = at.Unix(), int32(at.Nanosecond())
		e.Traceparent, e.Tracestate, e.ReferenceFrom = traceparent, tracestate, j.rows.ReferenceFrom()
		e.Body = j.rows.Body(row.Fields, profile.Meta{JobID: j.id, Row: row.Num, TransactionKey: key})
		err = j.pub.Publish(ctx, e)
		if errors.Is(err, publish.ErrTooLarge) {
			j.reject(&spoolv1.RowError{Row: row.Num, Reason: err.Error()}, counted)
			j.maybeCheckpoint(row.Num, r.Offset())
			continue
		}
		if err != nil {
			return publishStatus(ctx, err)
		}
		if counted {
			j.handed.Add(1)
			if row.Num <= j.canaryRows {
				j.canary.Add(1)
			}
			if j.rows.HasAmount() {
				// Check accepted the amount, so Add cannot fail.
				_ = j.sum.Add(j.rows.Amount(row.Fields))
			}
		} else {
			j.republished.Add(1)
		}
		j.maybeCheckpoint(row.Num, r.Offset())
	}
	if j.refusing() {
		return errInvalidRows
	}
	if err := j.pub.Flush(ctx); err != nil {
		return publishStatus(ctx, err)
	}
	return nil
}

// refusing reports whether the file is rejected for an invalid row.
func (j *job) refusing() bool {
	return j.rows.Refuses(j.base.Rejected + j.rejected.Load())
}

// rejectedStatus is the answer for a file rejected for its rows: the
// count, and the first row errors as BadRequest field violations. The row
// errors with their value excerpts travel in a StreamFileResponse detail
// only: the status message is logged, and must not carry payroll data.
func (j *job) rejectedStatus() error {
	n := j.base.Rejected + j.rejected.Load()
	st := status.Newf(codes.InvalidArgument, "job %s rejected, nothing will be delivered: %d invalid rows of %d (row policy reject-file)",
		j.id, n, j.base.Row+j.received.Load())
	return withRowErrors(st, j.errors, &spoolv1.StreamFileResponse{
		JobId:        j.id,
		RowsReceived: j.base.Row + j.received.Load(),
		RowsRejected: n,
		Errors:       j.errors,
	})
}

// transactionKey is the row's stable key (envelope.TransactionKey).
func (j *job) transactionKey(row csvread.Row) string {
	var bk []string
	for _, i := range j.rows.BusinessKey() {
		bk = append(bk, row.Fields[i])
	}
	return envelope.TransactionKey(j.id, row.Num, bk)
}

func (j *job) reject(e *spoolv1.RowError, counted bool) {
	if !counted {
		return
	}
	j.rejected.Add(1)
	if j.onReject != nil {
		j.onReject()
	}
	if len(j.errors) < j.maxErrors {
		j.errors = append(j.errors, e)
	}
}
