// Package report is the benchmark's table: each figure beside the baseline
// it was measured against in the same run, their ratio, and the floor the
// ratio must keep. A floor is checked only where the figure measures
// Spool; a row whose bound is the machine (the emulators' ceiling) says so
// and is shown without failing.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one line of the table.
type Row struct {
	// Name says what was measured; Unit what Value counts.
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Baseline is what Value is compared with, measured in the same run
	// (or computed, as Little's law's ideal); BaselineName says what it is.
	// Zero when the row has no baseline.
	Baseline     float64 `json:"baseline,omitempty"`
	BaselineName string  `json:"baseline_name,omitempty"`
	// Ratio is Value / Baseline unless set otherwise (a scaling ratio).
	Ratio float64 `json:"ratio,omitempty"`
	// Min and Max bound the ratio; zero is no bound.
	Min float64 `json:"min,omitempty"`
	Max float64 `json:"max,omitempty"`
	// Unchecked is why the floor does not apply in this run, if it does
	// not: the figure measured the machine, not Spool.
	Unchecked string `json:"unchecked,omitempty"`
	// Note is anything else a reader needs.
	Note string `json:"note,omitempty"`
	// Rounds and BaselineRounds are the measurements Value and Baseline
	// summarize (their medians), when the figure was measured in rounds.
	Rounds         []float64 `json:"rounds,omitempty"`
	BaselineRounds []float64 `json:"baseline_rounds,omitempty"`
}

// ratio returns the row's ratio, computing it from the baseline when it
// was not set.
func (r Row) ratio() float64 {
	if r.Ratio != 0 || r.Baseline == 0 {
		return r.Ratio
	}
	return r.Value / r.Baseline
}

// Failure says why a row's ratio is out of its bounds, or "" when it is
// within them or not checked.
func (r Row) Failure() string {
	if r.Unchecked != "" || (r.Baseline == 0 && r.Ratio == 0) {
		// Nothing to compare: the baseline did not run (-only).
		return ""
	}
	q := r.ratio()
	if math.IsNaN(q) {
		return fmt.Sprintf("%s: no ratio", r.Name)
	}
	if r.Min != 0 && q < r.Min {
		return fmt.Sprintf("%s: ratio %.3f below its floor %.2f", r.Name, q, r.Min)
	}
	if r.Max != 0 && q > r.Max {
		return fmt.Sprintf("%s: ratio %.3f above its ceiling %.2f", r.Name, q, r.Max)
	}
	return ""
}

// Table is a benchmark run.
type Table struct {
	// Kind names what was run, and the start of the JSON file's name:
	// "run" (make bench) when empty.
	Kind string `json:"kind,omitempty"`
	// Title says what the run compared, where its rows do not (the
	// commits of a comparison).
	Title    string    `json:"title,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Machine describes where it ran (cores, load), since every figure is
	// relative to it.
	Machine string `json:"machine"`
	Rows    []Row  `json:"rows"`
}

// Add appends rows.
func (t *Table) Add(rows ...Row) { t.Rows = append(t.Rows, rows...) }

// Failures lists every row out of its bounds.
func (t *Table) Failures() []string {
	var out []string
	for _, r := range t.Rows {
		if f := r.Failure(); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Print writes the table as aligned text, then one line per failure.
func (t *Table) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measured\tfigure\tbaseline\tratio\tbound\tnote")
	for _, r := range t.Rows {
		c := r.cells()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.name, c.figure, c.baseline, c.ratio, c.bound, c.note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range t.Failures() {
		if _, err := fmt.Fprintln(w, "FAIL", f); err != nil {
			return err
		}
	}
	return nil
}

// Markdown writes the table as the README shows it: a Markdown table of
// every column but the notes.
func (t *Table) Markdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("| measured | figure | baseline | ratio | bound |\n|---|---|---|---|---|\n")
	for _, r := range t.Rows {
		c := r.cells()
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", c.name, c.figure, c.baseline, c.ratio, c.bound)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cells is a row as text, one field per column.
type cells struct{ name, figure, baseline, ratio, bound, note string }

func (r Row) cells() cells {
	c := cells{name: r.Name, note: r.Note}
	if r.Baseline != 0 {
		c.baseline = fmt.Sprintf("%s (%s%s)", num(r.Baseline), r.BaselineName, rounds("; ", r.BaselineRounds))
	}
	if q := r.ratio(); q != 0 {
		c.ratio = fmt.Sprintf("%.2f", q)
	}
	var bound []string
	if r.Min != 0 {
		bound = append(bound, fmt.Sprintf("≥ %.2f", r.Min))
	}
	if r.Max != 0 {
		bound = append(bound, fmt.Sprintf("≤ %.2f", r.Max))
	}
	c.bound = strings.Join(bound, ", ")
	switch {
	case r.Failure() != "":
		c.bound += " FAIL"
	case c.bound != "" && r.Unchecked == "" && r.ratio() != 0:
		c.bound += " ok"
	case c.bound != "" && r.ratio() == 0:
		// The baseline did not run (-only): nothing was checked.
		c.bound += " not checked"
	}
	if r.Unchecked != "" {
		c.note = strings.TrimSpace("not checked: " + r.Unchecked + "; " + c.note)
		c.note = strings.TrimSuffix(c.note, ";")
	}
	c.figure = num(r.Value) + " " + r.Unit
	if rs := rounds("", r.Rounds); rs != "" {
		c.figure += " (" + rs + ")"
	}
	return c
}

// rounds lists the rounds behind a median after sep, or nothing for a
// figure measured once.
func rounds(sep string, xs []float64) string {
	if len(xs) < 2 {
		return ""
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = num(x)
	}
	return sep + "rounds " + strings.Join(s, ", ")
}

// num prints a figure with as many digits as it needs.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// WriteJSON writes the table to dir, named for its kind and when the run
// started, and returns the file's path.
func (t *Table) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode results: %w", err)
	}
	kind := t.Kind
	if kind == "" {
		kind = "run"
	}
	path := filepath.Join(dir, kind+"-"+t.Started.UTC().Format("20060102T150405Z")+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	return path, nil
}

// ReadJSON reads a table WriteJSON wrote.
func ReadJSON(path string) (*Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t Table
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return &t, nil
}
