package dispatch

import (
	"context"
	"fmt"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/threshold"
)

// Guard makes the automatic pauses of a job (jobstore.Store): each is one
// conditional write, decided on a fresh read, so of the dispatchers that
// see a job cross its threshold, or its canary settle, at once exactly one
// pauses it (the others get false).
type Guard interface {
	PauseOnThreshold(ctx context.Context, id string) (*spoolv1.Job, bool, error)
	PauseCanary(ctx context.Context, id, reason string) (*spoolv1.Job, bool, error)
	ReleaseCanary(ctx context.Context, id string) (*spoolv1.Job, error)
}

// The guards run where a dispatcher reads a job record for its gate, once
// per read (JobCacheTTL) rather than per message, on the fleet's summed
// counters: a job's failures are seen within a counter flush and a cache
// TTL of their settling, and rows in flight when it pauses finish.
//
// The canary is exact by construction rather than by timing: rows numbered
// beyond it are held at the gate, as rows of a paused job are, until the
// record says the canary is released, so no dispatcher sends one of them
// before a person (or a clean canary) lets it, however stale its copy.

// guard checks a SEALED job that is not paused against its failure
// threshold and its canary, pausing it (or releasing a clean canary) when
// due, and returns the job as it then is. A failed write is logged and
// tried again at the next read.
func (h *Handler) guard(ctx context.Context, j *spoolv1.Job) *spoolv1.Job {
	h.announceRows(ctx, j)
	if h.o.Guard == nil || j.GetState() != spoolv1.JobState_JOB_STATE_SEALED || j.GetPaused() {
		return j
	}
	id := j.GetJobId()
	if _, crossed := threshold.Check(j.GetFailureThreshold(), threshold.Of(j)); crossed {
		cur, paused, err := h.o.Guard.PauseOnThreshold(ctx, id)
		if err != nil {
			h.log.WarnContext(ctx, "pause job on its failure threshold", "job_id", id, "error", err)
			return j
		}
		if paused {
			h.log.InfoContext(ctx, "job paused by its failure threshold", "job_id", id, "reason", cur.GetPauseReason())
		}
		return cur
	}
	if !canaryOver(j) {
		return j
	}
	f := threshold.Of(j)
	if j.GetCanary().GetContinueWhenClean() && f.Failed == 0 && j.GetUnknown() == 0 {
		cur, err := h.o.Guard.ReleaseCanary(ctx, id)
		if err != nil {
			h.log.WarnContext(ctx, "release clean canary", "job_id", id, "error", err)
			return j
		}
		h.log.InfoContext(ctx, "clean canary released", "job_id", id, "rows", j.GetCanary().GetRows())
		return cur
	}
	cur, paused, err := h.o.Guard.PauseCanary(ctx, id, canaryReason(j, f))
	if err != nil {
		h.log.WarnContext(ctx, "pause job after its canary", "job_id", id, "error", err)
		return j
	}
	if paused {
		h.log.InfoContext(ctx, "job paused after its canary", "job_id", id, "reason", cur.GetPauseReason())
	}
	return cur
}

// canaryHolds reports whether row waits for j's canary to be released.
func canaryHolds(j *spoolv1.Job, row int64) bool {
	c := j.GetCanary()
	return c.GetRows() > 0 && !c.GetReleased() && row > c.GetRows()
}

// canaryOver reports whether every row of j's unreleased canary has
// settled. Only canary rows can settle while it holds (the rest wait at
// the gate), so the job's settled count is the canary's. Its size is the
// canary rows the ingestor published, recorded at the seal; a job sealed
// without it (by an older ingestor) counts its rows, or the job's total
// when smaller, less every row the ingestor left out, which may end the
// canary while its last rows are in flight, but never lets a row beyond
// it go.
func canaryOver(j *spoolv1.Job) bool {
	c := j.GetCanary()
	if c.GetRows() <= 0 || c.GetReleased() {
		return false
	}
	size := c.GetSize()
	if size == 0 {
		size = min(c.GetRows(), j.GetTotal()) - j.GetRowsRejected()
	}
	return size <= 0 || threshold.Of(j).Settled >= size
}

func canaryReason(j *spoolv1.Job, f threshold.Figures) string {
	n := j.GetCanary().GetRows()
	if f.Failed > 0 || j.GetUnknown() > 0 {
		return fmt.Sprintf("canary of %d settled with %d failed and %d unknown; resume to continue", n, f.Failed, j.GetUnknown())
	}
	return fmt.Sprintf("canary of %d delivered; resume to continue", n)
}

// deliverAfterWait is how long a message of j waits for the job's payment
// date: until the date, so the first delivery starts right on it, within
// SQS's longest visibility (the consumer caps it). Zero once it passed.
func (h *Handler) deliverAfterWait(j *spoolv1.Job) time.Duration {
	d := j.GetDeliverAfter()
	if d == nil {
		return 0
	}
	return max(d.AsTime().Sub(h.o.Now()), 0)
}
