package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spoolhq/spool/bench/internal/compare"
	"github.com/spoolhq/spool/bench/internal/gobench"
	"github.com/spoolhq/spool/bench/internal/report"
)

// ledgerFigures map BenchmarkLedgerWrites' metrics on the two sides. At
// 1a8c8b8 and at the head they are named alike; the head also measures the
// claim with legacy keys, which the base has no counterpart for and is
// not compared. A metric missing on a side fails the run.
var ledgerFigures = []compare.Figure{
	{Name: "ledger: claim + finish per row", Unit: "rows/s", BaseMetric: "ledger-rows/s", HeadMetric: "ledger-rows/s"},
	{Name: "ledger: time per row over one PutItem's", Unit: "×", Lower: true, BaseMetric: "ledger/put", HeadMetric: "ledger/put"},
	{
		Name: "ledger's baseline: one PutItem per row", Unit: "rows/s", BaseMetric: "put-rows/s", HeadMetric: "put-rows/s",
		Gauge: "dynalite alone, the same code on both sides: how far the machine drifted",
	},
}

// ingestFigures map BenchmarkIngestRSS's metrics (ingestor/bench: a fresh
// ingestor process on a fresh SQS emulator, 10 000 then 1 000 000 rows),
// named alike at 1a8c8b8 and at the head: the ingestor's speed at a
// million rows, and its memory.
var ingestFigures = []compare.Figure{
	{Name: "ingestor: rows/s at 1 000 000 rows", Unit: "rows/s", BaseMetric: "rows/s-1M", HeadMetric: "rows/s-1M"},
	{Name: "ingestor: peak RSS at 1 000 000 rows", Unit: "MiB", Lower: true, BaseMetric: "rss-1M-MiB", HeadMetric: "rss-1M-MiB"},
	{Name: "ingestor: peak RSS, 1 000 000 rows over 10 000", Unit: "×", Lower: true, BaseMetric: "rss-ratio", HeadMetric: "rss-ratio"},
}

// benchmarks are the Go benchmarks compared, each a test binary of both
// sides (side.tests) and the figures read from it.
var benchmarks = []struct {
	name, pkg, bench, benchtime string
	figures                     []compare.Figure
}{
	{"ledger", "dispatcher/internal/ledger", "BenchmarkLedgerWrites", "", ledgerFigures},
	{"ingest", "ingestor/bench", "BenchmarkIngestRSS", "1x", ingestFigures},
}

// measure runs the rounds, base then head each time, and adds a row per
// figure to tab.
func measure(ctx context.Context, c config, base, head side, tab *report.Table, log io.Writer) error {
	sides := []side{base, head}
	// e2e holds each side's end-to-end seconds, by side name.
	e2e := map[string][]float64{}
	// figures holds each benchmark's figures' rounds, by benchmark, figure
	// and side name.
	figures := make([][]map[string][]float64, len(benchmarks))
	for i, bm := range benchmarks {
		for range bm.figures {
			figures[i] = append(figures[i], map[string][]float64{})
		}
	}
	for round := 1; round <= c.rounds; round++ {
		for _, s := range sides {
			fmt.Fprintf(log, "\n== round %d of %d: e2e, %d rows, %s (%s)\n", round, c.rounds, c.rows, s.name, s.commit)
			sec, err := s.e2eSeconds(ctx, c.rows, log)
			if err != nil {
				return fmt.Errorf("round %d: %w", round, err)
			}
			e2e[s.name] = append(e2e[s.name], sec)
		}
		for i, bm := range benchmarks {
			benchtime := cmp.Or(bm.benchtime, c.benchtime)
			for _, s := range sides {
				fmt.Fprintf(log, "\n== round %d of %d: %s, %s (%s)\n", round, c.rounds, bm.bench, s.name, s.commit)
				m, err := s.benchMetrics(ctx, bm.pkg, bm.bench, benchtime, log)
				if err != nil {
					return fmt.Errorf("round %d: %w", round, err)
				}
				for j, f := range bm.figures {
					name := f.HeadMetric
					if s.name == "base" {
						name = f.BaseMetric
					}
					v, err := compare.Metric(m, name)
					if err != nil {
						return fmt.Errorf("round %d: %s's %s, for %q: %w", round, s.name, bm.bench, f.Name, err)
					}
					figures[i][j][s.name] = append(figures[i][j][s.name], v)
				}
			}
		}
	}

	baseName := "base " + base.commit
	e2eFig := compare.Figure{Name: fmt.Sprintf("e2e: %d rows through 3 dispatchers", c.rows), Unit: "s", Lower: true}
	r, err := e2eFig.Row(baseName, e2e["base"], e2e["head"], c.minNoise)
	if err != nil {
		return err
	}
	tab.Add(r)
	for i, bm := range benchmarks {
		for j, f := range bm.figures {
			f.Name += fmt.Sprintf(" (%s, %s)", strings.TrimPrefix(bm.bench, "Benchmark"), cmp.Or(bm.benchtime, c.benchtime))
			r, err := f.Row(baseName, figures[i][j]["base"], figures[i][j]["head"], c.minNoise)
			if err != nil {
				return err
			}
			tab.Add(r)
		}
	}
	return nil
}

// e2eSeconds runs the side's TestLargeFileThreeDispatchers once, on its
// own binaries, and returns the time it logged.
func (s *side) e2eSeconds(ctx context.Context, rows int, log io.Writer) (float64, error) {
	var out bytes.Buffer
	cmd := s.command(ctx, filepath.Join(s.dir, "e2e"), s.e2e,
		"-test.run", "^TestLargeFileThreeDispatchers$", "-test.v", "-test.count", "1", "-test.timeout", "60m")
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, log), log
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s's e2e: %w", s.name, err)
	}
	d, err := compare.E2ETime(&out, rows)
	if err != nil {
		return 0, fmt.Errorf("%s's e2e: %w", s.name, err)
	}
	return d.Seconds(), nil
}

// benchMetrics runs the side's benchmark bench in package pkg (its test
// binary, built by side.build) and returns the metrics it reported.
func (s *side) benchMetrics(ctx context.Context, pkg, bench, benchtime string, log io.Writer) (map[string]float64, error) {
	var out bytes.Buffer
	cmd := s.command(ctx, filepath.Join(s.dir, pkg), s.tests[pkg],
		"-test.run", "^$", "-test.bench", "^"+bench+"$", "-test.benchtime", benchtime,
		"-test.count", "1", "-test.timeout", "40m")
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, log), log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s's %s: %w", s.name, bench, err)
	}
	m, err := gobench.Parse(&out)
	if err != nil {
		return nil, fmt.Errorf("%s's %s: %w", s.name, bench, err)
	}
	return m, nil
}
