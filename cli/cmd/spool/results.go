package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spoolhq/spool/cli/internal/results"
	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func (a *app) resultsCommand() *command {
	c := newCommand("results", "[flags] JOB_ID",
		"Write a job's per-row results from the delivery ledger: row, business key, amount, state, attempts, last status, the third party's reference, reason, who resolved it; then the exact row count and amount sum per state (CSV: a second file, NAME.summary.csv, or stderr when writing to stdout; jsonl: a last summary line).")
	out := c.fs.String("o", "-", "file to write, - for stdout; written whole or not at all")
	format := c.fs.String("format", "csv", "csv or jsonl")
	c.perCall = []string{"o", "format"}
	a.runOnDispatchers(c, func(ctx context.Context, client spoolv1.DispatchServiceClient, jobID string) (bool, error) {
		f, err := results.ParseFormat(*format)
		if err != nil {
			return true, usagef("results: %v", err)
		}
		stream, err := client.ReportJob(ctx, &spoolv1.ReportJobRequest{JobId: jobID})
		if err != nil {
			return false, err
		}
		first, err := stream.Recv()
		if err != nil {
			// Nothing written yet: the next dispatcher may answer.
			return false, fmt.Errorf("results of job %s: %w", jobID, rpcerr.Readable(err))
		}
		dst, err := a.resultsTarget(*out, f)
		if err != nil {
			return true, err
		}
		w := results.New(dst.lines, dst.summary, f)
		err = writeResults(w, first, stream)
		if err == nil {
			err = dst.commit()
		}
		if err != nil {
			dst.abandon()
			return true, fmt.Errorf("results of job %s: %w", jobID, err)
		}
		if *out != "-" {
			fmt.Fprintf(a.stderr, "%d rows of job %s written to %s\n", w.Rows(), jobID, *out)
		}
		return true, nil
	})
	return c
}

// writeResults writes every entry of the report stream whose first
// message is first, and ends with its summary.
func writeResults(w *results.Writer, first *spoolv1.ReportJobResponse, stream interface {
	Recv() (*spoolv1.ReportJobResponse, error)
}) error {
	msg := first
	for {
		if e := msg.GetEntry(); e != nil {
			if err := w.Entry(e); err != nil {
				return err
			}
		} else {
			return w.Summary(msg.GetSummary())
		}
		var err error
		if msg, err = stream.Recv(); err != nil {
			return rpcerr.Readable(err)
		}
	}
}

// resultsTarget is where results go: files written under temporary names
// and renamed into place once complete, so that a cut stream never leaves
// a results file that looks whole; or stdout (and stderr for a CSV
// summary).
type resultsTarget struct {
	lines, summary io.Writer
	commit         func() error
	abandon        func()
}

func (a *app) resultsTarget(out string, f results.Format) (*resultsTarget, error) {
	if out == "-" {
		return &resultsTarget{lines: a.stdout, summary: a.stderr, commit: func() error { return nil }, abandon: func() {}}, nil
	}
	names := []string{out}
	if f == results.CSV {
		names = append(names, summaryPath(out))
	}
	var files []*os.File
	abandon := func() {
		for _, t := range files {
			t.Close()
			os.Remove(t.Name())
		}
	}
	for _, name := range names {
		t, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
		if err != nil {
			abandon()
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		files = append(files, t)
	}
	target := &resultsTarget{lines: files[0], summary: io.Discard, abandon: abandon}
	if len(files) > 1 {
		target.summary = files[1]
	}
	target.commit = func() error {
		// The summary first: the rows file appearing is the sign that both
		// are complete.
		for i := len(files) - 1; i >= 0; i-- {
			t := files[i]
			if err := t.Sync(); err != nil {
				return fmt.Errorf("write %s: %w", names[i], err)
			}
			if err := t.Close(); err != nil {
				return fmt.Errorf("write %s: %w", names[i], err)
			}
			if err := os.Rename(t.Name(), names[i]); err != nil {
				return fmt.Errorf("write %s: %w", names[i], err)
			}
		}
		return nil
	}
	return target, nil
}

// summaryPath is where the CSV summary of results written to out goes:
// results.csv → results.summary.csv.
func summaryPath(out string) string {
	return strings.TrimSuffix(out, ".csv") + ".summary.csv"
}
