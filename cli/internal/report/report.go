// Package report writes what `spool` tells people about a job: the
// ingestor's answer to a file, a job's record, and the summary at the end
// of a watch, and decides whether the job's outcome is a success.
package report

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/cli/internal/progress"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/threshold"
)

// Answer writes the ingestor's answer to a StreamFile: the job, the row
// counts, and the first rejected rows with their numbers.
func Answer(w io.Writer, r *spoolv1.StreamFileResponse) {
	fmt.Fprintf(w, "job %s", r.GetJobId())
	if name := r.GetJob().GetFileName(); name != "" {
		fmt.Fprintf(w, " (%s)", name)
	}
	if st := r.GetJob().GetState(); st != spoolv1.JobState_JOB_STATE_UNSPECIFIED {
		fmt.Fprintf(w, ": %s", progress.State(st))
	}
	fmt.Fprintf(w, "\nrows: %d received, %d published, %d rejected\n", r.GetRowsReceived(), r.GetRowsPublished(), r.GetRowsRejected())
	RowErrors(w, r)
}

// RowErrors writes the answer's row errors, one a line, and how many more
// rows were rejected than listed.
func RowErrors(w io.Writer, r *spoolv1.StreamFileResponse) {
	for _, e := range r.GetErrors() {
		fmt.Fprintf(w, "  %s\n", rowError(e))
	}
	if more := r.GetRowsRejected() - int64(len(r.GetErrors())); more > 0 && len(r.GetErrors()) > 0 {
		fmt.Fprintf(w, "  ... and %d more rejected rows\n", more)
	}
}

func rowError(e *spoolv1.RowError) string {
	where := fmt.Sprintf("row %d", e.GetRow())
	if e.GetRow() == 0 {
		where = "header"
	}
	if e.GetColumn() != "" {
		where += " (" + e.GetColumn() + ")"
	}
	return where + ": " + e.GetReason()
}

// Job writes a job's record, one labelled line per field that is set.
func Job(w io.Writer, j *spoolv1.Job) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(label, value string) {
		if value != "" {
			fmt.Fprintf(tw, "%s\t%s\n", label, value)
		}
	}
	num := func(label string, n int64) { fmt.Fprintf(tw, "%s\t%d\n", label, n) }
	line("job", j.GetJobId())
	line("key", j.GetJobKey())
	line("file", j.GetFileName())
	line("state", progress.State(j.GetState()))
	line("reason", j.GetStateReason())
	line("held", progress.Held(j, time.Now()))
	if t := j.GetFailureThreshold(); !threshold.Empty(t) {
		line("threshold", "pause at "+threshold.Describe(t))
	}
	if c := j.GetCanary(); c.GetRows() > 0 {
		canary := fmt.Sprintf("first %d rows", c.GetRows())
		if c.GetContinueWhenClean() {
			canary += ", going on by itself when none failed"
		}
		if c.GetReleased() {
			canary += " (released)"
		}
		line("canary", canary)
	}
	line("deliver after", stamp(j.GetDeliverAfter()))
	line("columns", strings.Join(j.GetColumns(), ", "))
	num("received", j.GetRowsReceived())
	num("published", j.GetRowsPublished())
	num("rejected", j.GetRowsRejected())
	num("total", j.GetTotal())
	num("delivered", j.GetDelivered())
	num("failed", j.GetFailed())
	num("retries", j.GetRetries())
	num("unknown", j.GetUnknown())
	num("dead-lettered", j.GetDeadLettered())
	num("duplicate rows", j.GetDuplicateRows())
	num("suppressed", j.GetDuplicatesSuppressed())
	num("dropped", j.GetDropped())
	if j.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING {
		num("resume row", j.GetResumeRow())
	}
	line("created", stamp(j.GetCreatedAt()))
	line("sealed", stamp(j.GetSealedAt()))
	line("completed", stamp(j.GetCompletedAt()))
	line("updated", stamp(j.GetUpdatedAt()))
	return tw.Flush()
}

func stamp(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}

// Wall returns how long j has run: from creation to completion, or to now
// while it runs. It falls back to fallback when the job has no creation
// time.
func Wall(j *spoolv1.Job, now time.Time, fallback time.Duration) time.Duration {
	if j.GetCreatedAt() == nil {
		return fallback
	}
	end := now
	if j.GetCompletedAt() != nil {
		end = j.GetCompletedAt().AsTime()
	}
	if d := end.Sub(j.GetCreatedAt().AsTime()); d > 0 {
		return d
	}
	return fallback
}

// Summary writes the end of a watch: state, delivered of total, failed,
// retries, wall time and average rate.
func Summary(w io.Writer, j *spoolv1.Job, wall time.Duration) {
	settled, of := progress.Settled(j)
	fmt.Fprintf(w, "job %s %s: delivered %d of %d, failed %d, retries %d\n",
		j.GetJobId(), progress.State(j.GetState()), j.GetDelivered(), of, j.GetFailed(), j.GetRetries())
	if n := j.GetDuplicateRows(); n > 0 {
		fmt.Fprintf(w, "%d rows not sent: their business key was already settled (spool report %s)\n", n, j.GetJobId())
	}
	if j.GetStateReason() != "" {
		fmt.Fprintf(w, "reason: %s\n", j.GetStateReason())
	}
	rate := 0.0
	if wall > 0 {
		rate = float64(settled) / wall.Seconds()
	}
	fmt.Fprintf(w, "wall time %s, average %s\n", wall.Round(time.Millisecond), progress.Rate(rate))
}

// Outcome returns nil only when j completed with no failed, unknown or
// rejected row, and an error saying what went wrong otherwise: a payroll
// that paid all but three people is not a success.
func Outcome(j *spoolv1.Job) error {
	switch {
	case j.GetState() != spoolv1.JobState_JOB_STATE_COMPLETED:
		msg := fmt.Sprintf("job %s ended %s", j.GetJobId(), progress.State(j.GetState()))
		if j.GetStateReason() != "" {
			msg += ": " + j.GetStateReason()
		}
		return &OutcomeError{msg: msg}
	case j.GetDeadLettered() > 0:
		return &OutcomeError{msg: fmt.Sprintf("%d rows dead-lettered after their retries: run spool deadletters %s", j.GetDeadLettered(), j.GetJobId())}
	case j.GetUnknown() > 0:
		return &OutcomeError{msg: fmt.Sprintf("%d rows UNKNOWN: run spool report %s", j.GetUnknown(), j.GetJobId())}
	case j.GetFailed() > 0:
		return &OutcomeError{msg: fmt.Sprintf("job %s completed with %d failed rows (of %d)", j.GetJobId(), j.GetFailed(), j.GetTotal())}
	case j.GetRowsRejected() > 0:
		return &OutcomeError{msg: fmt.Sprintf("job %s completed, but %d rows of the file were rejected and not sent", j.GetJobId(), j.GetRowsRejected())}
	}
	return nil
}

// OutcomeError is a job that did not end well; the command still ran as
// it should.
type OutcomeError struct{ msg string }

func (e *OutcomeError) Error() string { return e.msg }
