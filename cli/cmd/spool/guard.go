package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spoolhq/spool/cli/internal/progress"
	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/threshold"
)

// guardFlags are send's flags that guard a job's delivery: a failure
// threshold, a canary and a payment date. They describe one file, so they
// take no environment fallback.
type guardFlags struct {
	maxFailureRate, maxFailures, deliverAfter string
	minSettled, canary                        int64
	canaryContinue                            bool
}

var guardFlagNames = []string{"max-failure-rate", "max-failures", "min-settled", "canary", "canary-continue", "deliver-after"}

func (g *guardFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.maxFailureRate, "max-failure-rate", "", "pause the job when more than this share of settled rows failed (refused or dead-lettered), e.g. 2% (default: the profile's)")
	fs.StringVar(&g.maxFailures, "max-failures", "", "pause the job when more rows than this failed (default: the profile's)")
	fs.Int64Var(&g.minSettled, "min-settled", 0, fmt.Sprintf("settled rows before -max-failure-rate applies (0: the profile's, else %d)", threshold.DefaultMinSettled))
	fs.Int64Var(&g.canary, "canary", 0, "deliver only the first N rows, then pause until spool resume")
	fs.BoolVar(&g.canaryContinue, "canary-continue", false, "with -canary: go on by itself when none of the canary's rows failed")
	fs.StringVar(&g.deliverAfter, "deliver-after", "", "deliver nothing before this time (RFC 3339, e.g. 2026-12-01T06:00:00Z); the file is accepted and sealed now")
}

// apply sets the header's guards from the flags.
func (g *guardFlags) apply(h *spoolv1.FileHeader) error {
	t := &spoolv1.FailureThreshold{MinSettled: g.minSettled}
	if g.maxFailureRate != "" {
		r, err := threshold.ParseRate(g.maxFailureRate)
		if err != nil {
			return usagef("send: -max-failure-rate: %v", err)
		}
		t.MaxFailureRate = r
	}
	if g.maxFailures != "" {
		n, err := strconv.ParseInt(g.maxFailures, 10, 64)
		if err != nil || n < 0 {
			return usagef("send: -max-failures %q: want a count of rows, 0 or more", g.maxFailures)
		}
		t.MaxFailures = &n
	}
	if g.minSettled < 0 {
		return usagef("send: -min-settled %d: want 0 or more", g.minSettled)
	}
	if t.MaxFailures != nil || t.MaxFailureRate > 0 || t.MinSettled > 0 {
		h.FailureThreshold = t
	}
	if g.canary < 0 {
		return usagef("send: -canary %d: want a number of rows", g.canary)
	}
	if g.canary > 0 {
		h.Canary = &spoolv1.Canary{Rows: g.canary, ContinueWhenClean: g.canaryContinue}
	} else if g.canaryContinue {
		return usagef("send: -canary-continue needs -canary")
	}
	if g.deliverAfter != "" {
		at, err := time.Parse(time.RFC3339, g.deliverAfter)
		if err != nil {
			return usagef("send: -deliver-after %q: want a time such as 2026-12-01T06:00:00Z", g.deliverAfter)
		}
		h.DeliverAfter = timestamppb.New(at)
	}
	return nil
}

func (a *app) updateCommand() *command {
	c := newCommand("update", "[flags] JOB_ID", "Change a running job's failure threshold. A job its threshold paused resumes when the new one is not crossed; a job a person paused stays paused.")
	rate := c.fs.String("max-failure-rate", "", "pause when more than this share of settled rows failed, e.g. 2%; off removes it")
	count := c.fs.String("max-failures", "", "pause when more rows than this failed; off removes it")
	minSettled := c.fs.String("min-settled", "", fmt.Sprintf("settled rows before the rate applies; 0 restores the default (%d)", threshold.DefaultMinSettled))
	reason := c.fs.String("reason", "", "why, for the audit trail")
	c.perCall = []string{"max-failure-rate", "max-failures", "min-settled", "reason"}
	req := &spoolv1.UpdateJobRequest{}
	a.runOnDispatchers(c, func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (bool, error) {
		if err := updateRequest(req, *rate, *count, *minSettled); err != nil {
			return false, err
		}
		req.JobId, req.Reason = jobID, *reason
		ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		r, err := client.UpdateJob(ctx, req)
		if err != nil {
			return false, fmt.Errorf("update job %s: %w", jobID, rpcerr.Readable(err))
		}
		j := r.GetJob()
		_, err = fmt.Fprintf(a.stdout, "job %s is %s; pauses at %s\n", j.GetJobId(), stateWithHold(j), threshold.Describe(j.GetFailureThreshold()))
		return true, err
	})
	return c
}

// updateRequest fills req from update's flags; an unset flag changes
// nothing.
func updateRequest(req *spoolv1.UpdateJobRequest, rate, count, minSettled string) error {
	switch rate {
	case "":
	case "off":
		req.MaxFailureRate = new(float64)
	default:
		r, err := threshold.ParseRate(rate)
		if err != nil {
			return usagef("update: -max-failure-rate: %v", err)
		}
		req.MaxFailureRate = &r
	}
	switch count {
	case "":
	case "off":
		off := int64(-1)
		req.MaxFailures = &off
	default:
		n, err := strconv.ParseInt(count, 10, 64)
		if err != nil || n < 0 {
			return usagef("update: -max-failures %q: want a count of rows, or off", count)
		}
		req.MaxFailures = &n
	}
	if minSettled != "" {
		n, err := strconv.ParseInt(minSettled, 10, 64)
		if err != nil || n < 0 {
			return usagef("update: -min-settled %q: want 0 or more", minSettled)
		}
		req.MinSettled = &n
	}
	if req.MaxFailureRate == nil && req.MaxFailures == nil && req.MinSettled == nil {
		return usagef("update: nothing to change: give -max-failure-rate, -max-failures or -min-settled")
	}
	return nil
}

// stateWithHold is the job's state and what holds it, for one line.
func stateWithHold(j *spoolv1.Job) string {
	s := progress.State(j.GetState())
	if held := progress.Held(j, time.Now()); held != "" {
		s += " (" + strings.TrimSpace(held) + ")"
	}
	return s
}
