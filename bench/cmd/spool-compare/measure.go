package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"

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

// measure runs the rounds, base then head each time, and adds a row per
// figure to tab.
func measure(ctx context.Context, c config, base, head side, tab *report.Table, log io.Writer) error {
	sides := []side{base, head}
	// e2e holds each side's end-to-end seconds, by side name; ledger each
	// figure's rounds, by figure and side name.
	e2e := map[string][]float64{}
	ledger := make([]map[string][]float64, len(ledgerFigures))
	for i := range ledger {
		ledger[i] = map[string][]float64{}
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
		for _, s := range sides {
			fmt.Fprintf(log, "\n== round %d of %d: ledger benchmark, %s (%s)\n", round, c.rounds, s.name, s.commit)
			m, err := s.ledgerMetrics(ctx, c.benchtime, log)
			if err != nil {
				return fmt.Errorf("round %d: %w", round, err)
			}
			for i, f := range ledgerFigures {
				name := f.HeadMetric
				if s.name == "base" {
					name = f.BaseMetric
				}
				v, err := compare.Metric(m, name)
				if err != nil {
					return fmt.Errorf("round %d: %s's ledger benchmark, for %q: %w", round, s.name, f.Name, err)
				}
				ledger[i][s.name] = append(ledger[i][s.name], v)
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
	for i, f := range ledgerFigures {
		f.Name += " (LedgerWrites, " + c.benchtime + ")"
		r, err := f.Row(baseName, ledger[i]["base"], ledger[i]["head"], c.minNoise)
		if err != nil {
			return err
		}
		tab.Add(r)
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

// ledgerMetrics runs the side's BenchmarkLedgerWrites and returns the
// metrics it reported.
func (s *side) ledgerMetrics(ctx context.Context, benchtime string, log io.Writer) (map[string]float64, error) {
	var out bytes.Buffer
	cmd := s.command(ctx, filepath.Join(s.dir, "dispatcher", "internal", "ledger"), s.ledger,
		"-test.run", "^$", "-test.bench", "^BenchmarkLedgerWrites$", "-test.benchtime", benchtime,
		"-test.count", "1", "-test.timeout", "30m")
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, log), log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s's ledger benchmark: %w", s.name, err)
	}
	m, err := gobench.Parse(&out)
	if err != nil {
		return nil, fmt.Errorf("%s's ledger benchmark: %w", s.name, err)
	}
	return m, nil
}
