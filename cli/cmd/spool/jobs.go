package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/cli/internal/progress"
	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func (a *app) jobsCommand() *command {
	c := newCommand("jobs", "[flags]", "List recent jobs, newest first: state, progress, failures and age, from the job table's index (any dispatcher answers).")
	dispatchers := dispatcherAddrsFlag(c.fs)
	states := c.fs.String("state", "", "only jobs in these states, comma-separated (receiving, sealed, completed, aborted, rejected, cancelled); all when empty")
	since := c.fs.Duration("since", 0, "only jobs created within this long before now, e.g. 24h; all when 0")
	limit := c.fs.Int("limit", 20, "most jobs to show (1 to 500)")
	token := c.fs.String("page-token", "", "continue a listing where the previous one said it stopped")
	c.perCall = []string{"state", "since", "limit", "page-token"}
	c.run = func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("jobs: takes no arguments, got %q", args[0])
		}
		if *limit < 1 || *limit > 500 {
			return usagef("jobs: -limit %d: want 1 to 500", *limit)
		}
		req := &spoolv1.ListJobsRequest{PageSize: int32(*limit), PageToken: *token}
		for s := range strings.SplitSeq(*states, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			st, ok := spoolv1.JobState_value["JOB_STATE_"+strings.ToUpper(s)]
			if !ok || st == 0 {
				return usagef("jobs: -state %q: not a job state", s)
			}
			req.States = append(req.States, spoolv1.JobState(st))
		}
		now := a.now()
		if *since > 0 {
			req.CreatedAfter = timestamppb.New(now.Add(-*since))
		}
		return a.onDispatcherAddrs(*dispatchers, func(client spoolv1.DispatchServiceClient) (bool, error) {
			resp, err := client.ListJobs(ctx, req)
			if err != nil {
				return false, fmt.Errorf("list jobs: %w", rpcerr.Readable(err))
			}
			return true, writeJobs(a.stdout, resp, now)
		})
	}
	return c
}

// writeJobs prints a page of jobs as a table, and how to get the next.
func writeJobs(w io.Writer, resp *spoolv1.ListJobsResponse, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATE\tSETTLED\t%\tFAILED\tUNKNOWN\tDLQ\tAGE\tFILE")
	for _, j := range resp.GetJobs() {
		settled, of := progress.Settled(j)
		pct := "-"
		if of > 0 {
			pct = fmt.Sprintf("%.1f%%", 100*float64(settled)/float64(of))
		}
		state := progress.State(j.GetState())
		if j.GetPaused() {
			state += " paused"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%d\t%d\t%d\t%s\t%s\n", j.GetJobId(), state, settled, of, pct,
			j.GetFailed(), j.GetUnknown(), j.GetDeadLettered(), age(now.Sub(j.GetCreatedAt().AsTime())), j.GetFileName())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next := resp.GetNextPageToken(); next != "" {
		_, err := fmt.Fprintf(w, "more: spool jobs -page-token %s (with the same filters)\n", next)
		return err
	}
	return nil
}

// age is a duration for people, in its largest unit or two.
func age(d time.Duration) string {
	switch d = max(d, 0).Round(time.Second); {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}
