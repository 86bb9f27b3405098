package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spoolhq/spool/cli/internal/report"
	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// pendingApproval tells the person that their resolve or redrive waits
// for a second one, and how that one approves it. It is not an error:
// the request is made, and calling again would make another.
func (a *app) pendingApproval(p *spoolv1.ApprovalRequest) error {
	_, err := fmt.Fprintf(a.stdout, "%s of job %s awaits approval by another person (four-eyes): nothing changed yet\n"+
		"request %s, expires %s; they approve it with: spool approve %s\n",
		requestWhat(p), p.GetJobId(), p.GetRequestId(), p.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), p.GetRequestId())
	return err
}

// requestWhat says what a request asks for: "resolve row 7 DELIVERED".
func requestWhat(p *spoolv1.ApprovalRequest) string {
	if p.GetAction() == spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE {
		return fmt.Sprintf("resolve row %d %s", p.GetRow(), resolutionName(p.GetResolution()))
	}
	return "redrive of dead letters"
}

func resolutionName(r spoolv1.Resolution) string {
	return strings.TrimPrefix(r.String(), "RESOLUTION_")
}

func actionName(a spoolv1.OperatorAction) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "OPERATOR_ACTION_"))
}

func (a *app) approveCommand() *command {
	c := newCommand("approve", "[flags] REQUEST_ID", "Approve another person's four-eyes request (a resolve or a redrive) and apply it. Approving again after a lost answer applies nothing twice.")
	dispatchers := dispatcherAddrsFlag(c.fs)
	reason := c.fs.String("reason", "", "why you approve, for the audit trail")
	c.perCall = []string{"reason"}
	c.run = func(ctx context.Context, args []string) error {
		id, addrs, err := argAndDispatchers("approve", "REQUEST_ID", args, *dispatchers)
		if err != nil {
			return err
		}
		return a.onDispatcher(addrs, func(client spoolv1.DispatchServiceClient) (bool, error) {
			ctx, cancel := context.WithTimeout(ctx, rpcTimeout+time.Minute)
			defer cancel()
			resp, err := client.ApproveRequest(ctx, &spoolv1.ApproveRequestRequest{RequestId: id, Reason: *reason})
			if err != nil {
				return false, fmt.Errorf("approve request %s: %w", id, rpcerr.Readable(err))
			}
			r := resp.GetRequest()
			fmt.Fprintf(a.stdout, "request %s (%s of job %s, asked by %s) approved by %s: %s\n", r.GetRequestId(), requestWhat(r),
				r.GetJobId(), r.GetRequestedBy(), r.GetApprovedBy(), strings.ToLower(strings.TrimPrefix(r.GetState().String(), "APPROVAL_STATE_")))
			switch {
			case resp.GetEntry() != nil:
				e := resp.GetEntry()
				_, err = fmt.Fprintf(a.stdout, "row %d of job %s is now %s\n", e.GetRow(), e.GetJobId(), report.TxState(e.GetState()))
			case resp.GetSummary() != nil:
				err = deadLetterSummary(a.stdout, "moved back to the queue", resp.GetSummary())
			}
			return true, err
		})
	}
	return c
}

func (a *app) pendingCommand() *command {
	c := newCommand("pending", "[flags] [JOB_ID]", "List the four-eyes requests awaiting approval (and any approved whose action was cut short), of one job or of every job.")
	dispatchers := dispatcherAddrsFlag(c.fs)
	c.run = func(ctx context.Context, args []string) error {
		if len(args) > 1 {
			return usagef("pending: want at most one JOB_ID")
		}
		job := ""
		if len(args) == 1 {
			job = args[0]
		}
		return a.onDispatcherAddrs(*dispatchers, func(client spoolv1.DispatchServiceClient) (bool, error) {
			ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
			defer cancel()
			resp, err := client.ListPendingRequests(ctx, &spoolv1.ListPendingRequestsRequest{JobId: job})
			if err != nil {
				return false, fmt.Errorf("list pending requests: %w", rpcerr.Readable(err))
			}
			if len(resp.GetRequests()) == 0 {
				_, err := fmt.Fprintln(a.stdout, "no request awaits approval")
				return true, err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "request\tjob\twhat\tasked by\tat\texpires\treason\tstate")
			for _, r := range resp.GetRequests() {
				state := "awaits approval"
				if r.GetState() == spoolv1.ApprovalState_APPROVAL_STATE_APPROVED {
					// An approval cut short: approving again applies it.
					state = "approved by " + r.GetApprovedBy() + ", not applied: approve again"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetRequestId(), r.GetJobId(), requestWhat(r), r.GetRequestedBy(),
					r.GetRequestedAt().AsTime().UTC().Format(time.RFC3339), r.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), dash(oneLine(r.GetReason())), state)
			}
			return true, tw.Flush()
		})
	}
	return c
}

func (a *app) auditCommand() *command {
	c := newCommand("audit", "[flags] JOB_ID", "Print a job's audit trail: every pause, resume, cancel, update, resolve, redrive, four-eyes request and approval, who did it, why, and what came of it.")
	a.runOnDispatchers(c, func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (bool, error) {
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		wrote := false
		token := ""
		for {
			cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
			resp, err := client.ListAuditEvents(cctx, &spoolv1.ListAuditEventsRequest{JobId: jobID, PageToken: token})
			cancel()
			if err != nil {
				// A dispatcher that fails before the first page may be
				// replaced by the next; after it, the trail is cut.
				if wrote {
					tw.Flush()
				}
				return wrote, fmt.Errorf("audit trail of job %s: %w", jobID, rpcerr.Readable(err))
			}
			if !wrote {
				fmt.Fprintln(tw, "at\taction\tby\tapproved by\treason\toutcome")
				wrote = true
			}
			for _, e := range resp.GetEvents() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.GetAt().AsTime().UTC().Format(time.RFC3339), eventWhat(e), e.GetActor(),
					dash(e.GetApprovedBy()), dash(oneLine(e.GetReason())), outcomeText(e.GetOutcome()))
			}
			if token = resp.GetNextPageToken(); token == "" {
				return true, tw.Flush()
			}
		}
	})
	return c
}

// eventWhat says what an event was: "resolve row 7 DELIVERED",
// "request: redrive", "approve 18c…".
func eventWhat(e *spoolv1.AuditEvent) string {
	what := actionName(e.GetAction())
	switch e.GetAction() {
	case spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE:
		what += fmt.Sprintf(" row %d %s", e.GetRow(), resolutionName(e.GetResolution()))
	case spoolv1.OperatorAction_OPERATOR_ACTION_UPDATE:
		if e.GetDetail() != "" {
			what += " " + e.GetDetail()
		}
	case spoolv1.OperatorAction_OPERATOR_ACTION_REQUEST, spoolv1.OperatorAction_OPERATOR_ACTION_APPROVE:
		what += " " + actionName(e.GetRequestedAction())
		if e.GetRequestedAction() == spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE {
			what += fmt.Sprintf(" row %d %s", e.GetRow(), resolutionName(e.GetResolution()))
		}
	}
	if e.GetRequestId() != "" {
		what += " (request " + e.GetRequestId() + ")"
	}
	return what
}

// outcomeText is an event's outcome; an event without one was attempted
// by a dispatcher that stopped before it knew the result.
func outcomeText(o string) string {
	if o == "" {
		return "unknown: look at the job"
	}
	return oneLine(o)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
