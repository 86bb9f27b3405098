// Command spool-compare shows whether this checkout is slower than a base
// commit: it checks the base out into a temporary git worktree, builds both
// (binaries, emulators, test binaries), then measures the end-to-end run of
// TestLargeFileThreeDispatchers and the ledger benchmark on each, the two
// sides taking turns round after round so that the machine's drift hits
// both alike. It prints one table (each figure's median and rounds on both
// sides, the ratio, the verdict), writes it as JSON to bench/results/, and
// exits non-zero when a figure is slower beyond noise (package compare
// states the rule).
//
//	make deps build && go run ./bench/cmd/spool-compare -base 1a8c8b8   (from the repo root)
//
// The worktree lives under the system's temporary directory and is removed
// at the end, a failed or interrupted run included.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spoolhq/spool/bench/internal/compare"
	"github.com/spoolhq/spool/bench/internal/report"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spool-compare:", err)
		os.Exit(1)
	}
}

type config struct {
	root, base, results string
	rounds, rows        int
	benchtime           string
	minNoise            float64
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c config
	fs := flag.NewFlagSet("spool-compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.root, "root", ".", "the repository's root: the head, as checked out (uncommitted changes included)")
	fs.StringVar(&c.base, "base", "1a8c8b8", "the commit to compare with")
	fs.IntVar(&c.rounds, "count", 2, "rounds; each runs base, then head")
	fs.IntVar(&c.rows, "rows", 0, "rows of the end-to-end run (default $SPOOL_E2E_ROWS, else 50000)")
	fs.StringVar(&c.benchtime, "benchtime", "3x", "the ledger benchmark's -benchtime")
	fs.Float64Var(&c.minNoise, "min-noise", 0.03, "the least relative noise a ratio is held to")
	fs.StringVar(&c.results, "results", "", "where the JSON goes (default ROOT/bench/results)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if c.rows == 0 {
		c.rows = 50000
		if v := os.Getenv("SPOOL_E2E_ROWS"); v != "" {
			if c.rows, err = strconv.Atoi(v); err != nil {
				return fmt.Errorf("SPOOL_E2E_ROWS: %w", err)
			}
		}
	}
	if c.rounds < 1 || c.rows < 1 {
		return errors.New("-count and -rows must be at least 1")
	}
	if c.root, err = filepath.Abs(c.root); err != nil {
		return err
	}
	if c.results == "" {
		c.results = filepath.Join(c.root, "bench", "results")
	}

	work, err := os.MkdirTemp("", "spool-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	base, head, cleanup, err := checkout(ctx, c, work, stderr)
	// cleanup removes the worktree whatever happened after it was added.
	defer cleanup()
	if err != nil {
		return err
	}
	tab := &report.Table{
		Kind:    "compare",
		Title:   fmt.Sprintf("head %s against base %s", head.commit, base.commit),
		Started: time.Now(), Machine: report.Machine(),
	}
	if err := measure(ctx, c, base, head, tab, stderr); err != nil {
		return err
	}
	tab.Finished = time.Now()
	if l, ok := report.LoadAverage(); ok {
		tab.Machine += fmt.Sprintf(", %.1f at the end", l)
	}
	return finish(tab, c, stdout)
}

// finish prints the table, writes it to results as JSON, and fails when a
// figure is slower beyond noise.
func finish(tab *report.Table, c config, stdout io.Writer) error {
	fmt.Fprintf(stdout, "\nSpool, %s, %d round(s) (%s; %s)\n%s\n\n", tab.Title, c.rounds,
		tab.Machine, tab.Finished.Sub(tab.Started).Round(time.Second), compare.Rule(c.minNoise))
	if err := tab.Print(stdout); err != nil {
		return err
	}
	path, err := tab.WriteJSON(c.results)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nresults:", path)
	if f := tab.Failures(); len(f) > 0 {
		return fmt.Errorf("%d figure(s) slower than the base beyond noise", len(f))
	}
	return nil
}
