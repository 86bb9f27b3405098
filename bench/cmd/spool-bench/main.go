// Command spool-bench measures Spool side by side with what a user could
// run instead, in one run on one machine, prints one table (each figure
// beside its baseline, the ratio and its bound), writes it as JSON to
// bench/results/, and exits non-zero when a ratio is out of its bound.
//
//	make build && go run ./bench/cmd/spool-bench        (from the repo root)
//
// It starts real processes (local/stack) and the emulators on loopback;
// -scale shrinks every size for a quick look, -short skips the 1 M-row
// memory run.
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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spoolhq/spool/bench/internal/report"
	"github.com/spoolhq/spool/bench/internal/scenario"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spool-bench:", err)
		os.Exit(1)
	}
}

type config struct {
	root, bin, results string
	scale              float64
	short              bool
	only               map[string]bool
}

// parts are the benchmark's parts, in the order they run.
var parts = []string{"ceiling", "delivery", "loss", "ingest", "ledger", "rss"}

// runs tells whether part is to run.
func (c config) runs(part string) bool { return len(c.only) == 0 || c.only[part] }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c config
	fs := flag.NewFlagSet("spool-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.root, "root", ".", "the repository's root")
	fs.StringVar(&c.bin, "bin", "", "the built binaries (default ROOT/bin)")
	fs.StringVar(&c.results, "results", "", "where the JSON goes (default ROOT/bench/results)")
	fs.Float64Var(&c.scale, "scale", 1, "multiplies every size (rows); below 1 for a quick look, not for figures")
	fs.BoolVar(&c.short, "short", false, "skip the 1 M-row memory run")
	markdown := fs.String("markdown", "", "print the table of this `results JSON` as Markdown (the README's table) and run nothing")
	only := fs.String("only", "", "run only these parts, comma-separated ("+strings.Join(parts, ", ")+"); a ratio whose baseline did not run is left out")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *markdown != "" {
		t, err := report.ReadJSON(*markdown)
		if err != nil {
			return err
		}
		return t.Markdown(stdout)
	}
	if *only != "" {
		c.only = map[string]bool{}
		for _, p := range strings.Split(*only, ",") {
			if !slices.Contains(parts, p) {
				return fmt.Errorf("-only: no part %q (parts: %s)", p, strings.Join(parts, ", "))
			}
			c.only[p] = true
		}
	}
	if c.bin == "" {
		c.bin = filepath.Join(c.root, "bin")
	}
	if c.results == "" {
		c.results = filepath.Join(c.root, "bench", "results")
	}
	if c.scale <= 0 {
		return errors.New("-scale must be above 0")
	}
	var err error
	if c.root, err = filepath.Abs(c.root); err != nil {
		return err
	}
	if c.bin, err = filepath.Abs(c.bin); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "spool-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	tab := &report.Table{Started: time.Now(), Machine: report.Machine()}
	env := scenario.Env{BinDir: c.bin, WorkDir: work, Log: stderr}
	if err := measure(ctx, c, env, tab); err != nil {
		return err
	}
	tab.Finished = time.Now()
	if l, ok := report.LoadAverage(); ok {
		tab.Machine += fmt.Sprintf(", %.1f at the end", l)
	}
	return finish(tab, c.results, stdout)
}

// finish prints the table, writes it to results as JSON, and fails when a
// ratio is out of its bound: make bench exits non-zero then.
func finish(tab *report.Table, results string, stdout io.Writer) error {
	fmt.Fprintf(stdout, "\nSpool side by side (%s; %s)\n\n", tab.Machine, tab.Finished.Sub(tab.Started).Round(time.Second))
	if err := tab.Print(stdout); err != nil {
		return err
	}
	path, err := tab.WriteJSON(results)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nresults:", path)
	if f := tab.Failures(); len(f) > 0 {
		return fmt.Errorf("%d ratios out of their bounds", len(f))
	}
	return nil
}
