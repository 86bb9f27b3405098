package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// The commands for delivery failures: dead letters, and an operator's hold on
// a job.

func (a *app) deadLettersCommand() *command {
	c := newCommand("deadletters", "[flags] JOB_ID", "List a job's messages in the dead-letter queue, with why each was given up. The queue is shared by every job, so this is a bounded scan; the last line says whether it saw the whole queue.")
	maxScan := c.fs.Int("max-scan", 0, "most dead-letter messages (of every job) to read; 0 = the dispatcher's -dead-letter-scan")
	a.runOnDispatchers(c, func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (bool, error) {
		stream, err := client.ListDeadLetters(ctx, &spoolv1.ListDeadLettersRequest{JobId: jobID, MaxScan: int32(*maxScan)})
		if err != nil {
			return false, err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		wrote := false
		for {
			msg, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("the listing ended without a summary")
				}
				return wrote, fmt.Errorf("list dead letters of job %s: %w", jobID, rpcerr.Readable(err))
			}
			if !wrote {
				fmt.Fprintln(tw, "ROW\tSTATUS\tATTEMPTS\tDEAD-LETTERED\tREASON")
			}
			wrote = true
			if e := msg.GetEntry(); e != nil {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", e.GetRow(), statusText(e.GetStatus()), e.GetAttempts(), when(e), oneLine(e.GetReason()))
				continue
			}
			if err := tw.Flush(); err != nil {
				return true, err
			}
			return true, deadLetterSummary(a.stdout, "dead letters", msg.GetSummary())
		}
	})
	return c
}

func (a *app) redriveCommand() *command {
	c := newCommand("redrive", "[flags] JOB_ID", "Move a job's dead letters back to the main queue, each with a fresh retry budget. Rows already delivered are not sent again. Under four-eyes this records a request that another person approves (spool approve).")
	maxScan := c.fs.Int("max-scan", 0, "most dead-letter messages (of every job) to read; 0 = the dispatcher's -dead-letter-scan")
	reason := c.fs.String("reason", "", "why, for the audit trail")
	c.perCall = []string{"reason"}
	a.runOnDispatchers(c, func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, rpcTimeout+time.Minute)
		defer cancel()
		resp, err := client.RedriveDeadLetters(ctx, &spoolv1.RedriveDeadLettersRequest{JobId: jobID, MaxScan: int32(*maxScan), Reason: *reason})
		if err != nil {
			return false, fmt.Errorf("redrive dead letters of job %s: %w", jobID, rpcerr.Readable(err))
		}
		if p := resp.GetPendingApproval(); p != nil {
			return true, a.pendingApproval(p)
		}
		return true, deadLetterSummary(a.stdout, "moved back to the queue", resp.GetSummary())
	})
	return c
}

// deadLetterSummary prints the closing line of a listing or a redrive.
func deadLetterSummary(w io.Writer, what string, s *spoolv1.DeadLetterSummary) error {
	_, err := fmt.Fprintf(w, "%d %s; %d dead-letter messages read", s.GetMatched(), what, s.GetScanned())
	if err != nil {
		return err
	}
	switch {
	case s.GetComplete():
		_, err = fmt.Fprintln(w, ", the whole queue")
	case s.GetHeldElsewhere() > 0:
		_, err = fmt.Fprintf(w, "; %d were held by another reader: run it again for the rest\n", s.GetHeldElsewhere())
	default:
		_, err = fmt.Fprintln(w, "; the scan stopped at its bound: run it again for the rest")
	}
	return err
}

func statusText(s int32) string {
	if s == 0 {
		return "-"
	}
	return fmt.Sprint(s)
}

func when(e *spoolv1.DeadLetter) string {
	if e.GetDeadLetteredAt() == nil {
		return "-"
	}
	return e.GetDeadLetteredAt().AsTime().UTC().Format(time.RFC3339)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// jobControlCommand makes pause, resume and cancel: one call on a
// dispatcher (any of them: the job record is shared) and the job's state.
func (a *app) jobControlCommand(name, summary string, call func(ctx context.Context, c spoolv1.DispatchServiceClient, jobID, reason string) (*spoolv1.Job, error)) *command {
	args := "[flags] JOB_ID"
	c := newCommand(name, args, summary)
	reason := new(string)
	why := "why, for the audit trail"
	if name == "cancel" {
		why = "why, recorded as the job's state reason and in the audit trail"
	}
	c.fs.StringVar(reason, "reason", "", why)
	c.perCall = []string{"reason"}
	a.runOnDispatchers(c, func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		j, err := call(ctx, client, jobID, *reason)
		if err != nil {
			return false, fmt.Errorf("%s job %s: %w", name, jobID, rpcerr.Readable(err))
		}
		_, err = fmt.Fprintf(a.stdout, "job %s is %s\n", j.GetJobId(), stateWithHold(j))
		return true, err
	})
	return c
}

func (a *app) pauseCommand() *command {
	return a.jobControlCommand("pause", "Pause a job: within seconds no dispatcher starts a delivery of it; deliveries under way finish.",
		func(ctx context.Context, c spoolv1.DispatchServiceClient, id, reason string) (*spoolv1.Job, error) {
			r, err := c.PauseJob(ctx, &spoolv1.PauseJobRequest{JobId: id, Reason: reason})
			return r.GetJob(), err
		})
}

func (a *app) resumeCommand() *command {
	return a.jobControlCommand("resume", "Resume a paused job; its held messages come back within the dispatchers' -paused-delay.",
		func(ctx context.Context, c spoolv1.DispatchServiceClient, id, reason string) (*spoolv1.Job, error) {
			r, err := c.ResumeJob(ctx, &spoolv1.ResumeJobRequest{JobId: id, Reason: reason})
			return r.GetJob(), err
		})
}

func (a *app) cancelCommand() *command {
	return a.jobControlCommand("cancel", "Cancel a job: its remaining rows are never delivered, and are counted as dropped.",
		func(ctx context.Context, c spoolv1.DispatchServiceClient, id, reason string) (*spoolv1.Job, error) {
			r, err := c.CancelJob(ctx, &spoolv1.CancelJobRequest{JobId: id, Reason: reason})
			return r.GetJob(), err
		})
}
