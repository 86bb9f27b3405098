// Package results writes a job's per-row results file, the one a finance
// team reconciles against the third party: one line per row of the
// delivery ledger, with the row, its business key and amount, its state,
// attempts, last status, the third party's reference, the reason and who
// resolved it by hand (and who approved that, under four-eyes), followed by the exact row count and amount sum per state.
//
// A line is written as each ledger entry arrives from ReportJob, and
// nothing of a row is kept after its line: memory stays flat whatever the
// job's size. The per-state sums are added up here too, as the lines are
// written, and compared with the report's own summary at the end: a stream
// that lost or repeated a row is an error, never a results file that looks
// complete.
//
// Two formats:
//
//   - CSV: a header line and one line per row, nothing else, so that the
//     file loads as a table; the sums go to a second CSV (state, rows,
//     amount_sum; see Summary). Text cells that a spreadsheet would run as
//     a formula (starting with =, +, -, @, tab or CR, but not a signed
//     number) are prefixed with an apostrophe: a reason may quote the
//     third party's answer.
//   - JSON lines: {"result": {...}} per row, then one {"summary": {...}}.
package results

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spoolhq/spool/cli/internal/progress"
	"github.com/spoolhq/spool/cli/internal/report"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/decimal"
)

// Columns of a results line, in order.
var Columns = []string{
	"row", "business_key", "amount", "state", "attempts", "last_status",
	"reference", "reference_truncated", "reason", "resolved_by", "approved_by",
}

// SummaryColumns are the columns of the CSV summary.
var SummaryColumns = []string{"state", "rows", "amount_sum"}

// Format is a results file's format.
type Format int

// The formats.
const (
	CSV Format = iota
	JSONLines
)

// ParseFormat reads the -format flag.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "csv":
		return CSV, nil
	case "jsonl":
		return JSONLines, nil
	}
	return CSV, fmt.Errorf("format %q: want csv or jsonl", s)
}

// Writer writes a results file as the report streams in. It is not safe
// for concurrent use.
type Writer struct {
	format  Format
	out     *bufio.Writer
	csv     *csv.Writer
	summary io.Writer
	totals  map[spoolv1.TransactionState]*total
	rows    int64
	started bool
	cells   []string
}

type total struct {
	rows int64
	sum  decimal.Total
}

// New returns a writer of lines to out. For CSV, the summary goes to
// summary; for JSON lines it is the last line of out, and summary is not
// used.
func New(out io.Writer, summary io.Writer, f Format) *Writer {
	bw := bufio.NewWriterSize(out, 64<<10)
	w := &Writer{format: f, out: bw, summary: summary, totals: map[spoolv1.TransactionState]*total{}, cells: make([]string, len(Columns))}
	if f == CSV {
		w.csv = csv.NewWriter(bw)
	}
	return w
}

// Rows is how many lines were written.
func (w *Writer) Rows() int64 { return w.rows }

// Line is one row's results, as written in JSON lines.
type Line struct {
	Row                int64  `json:"row"`
	BusinessKey        string `json:"business_key,omitempty"`
	Amount             string `json:"amount,omitempty"`
	State              string `json:"state"`
	Attempts           int32  `json:"attempts"`
	LastStatus         int32  `json:"last_status,omitempty"`
	Reference          string `json:"reference,omitempty"`
	ReferenceTruncated bool   `json:"reference_truncated,omitempty"`
	Reason             string `json:"reason,omitempty"`
	ResolvedBy         string `json:"resolved_by,omitempty"`
	ApprovedBy         string `json:"approved_by,omitempty"`
}

// LineOf is the results line of a ledger entry.
func LineOf(e *spoolv1.LedgerEntry) Line {
	return Line{
		Row: e.GetRow(), BusinessKey: e.GetBusinessKey(), Amount: e.GetAmount(), State: report.TxState(e.GetState()),
		Attempts: e.GetAttempts(), LastStatus: e.GetLastStatus(), Reference: e.GetReference(),
		ReferenceTruncated: e.GetReferenceTruncated(), Reason: e.GetReason(), ResolvedBy: e.GetResolvedBy(), ApprovedBy: e.GetApprovedBy(),
	}
}

// Entry writes one row's line.
func (w *Writer) Entry(e *spoolv1.LedgerEntry) error {
	t := w.totals[e.GetState()]
	if t == nil {
		t = &total{}
		w.totals[e.GetState()] = t
	}
	t.rows++
	t.sum.Add(e.GetAmount())
	w.rows++
	l := LineOf(e)
	if w.format == JSONLines {
		return w.jsonLine("result", l)
	}
	if err := w.header(); err != nil {
		return err
	}
	c := w.cells
	c[0] = strconv.FormatInt(l.Row, 10)
	c[1] = Cell(l.BusinessKey)
	c[2] = Cell(l.Amount)
	c[3] = l.State
	c[4] = strconv.FormatInt(int64(l.Attempts), 10)
	c[5] = ""
	if l.LastStatus != 0 {
		c[5] = strconv.FormatInt(int64(l.LastStatus), 10)
	}
	c[6] = Cell(l.Reference)
	c[7] = ""
	if l.ReferenceTruncated {
		c[7] = "true"
	}
	c[8] = Cell(l.Reason)
	c[9] = Cell(l.ResolvedBy)
	c[10] = Cell(l.ApprovedBy)
	if err := w.csv.Write(c); err != nil {
		return fmt.Errorf("write results of row %d: %w", l.Row, err)
	}
	return nil
}

// header writes the CSV header line, once.
func (w *Writer) header() error {
	if w.started {
		return nil
	}
	w.started = true
	if err := w.csv.Write(Columns); err != nil {
		return fmt.Errorf("write results header: %w", err)
	}
	return nil
}

// ErrDisagree means the lines written do not add up to the report's
// summary: the stream lost or repeated rows.
var ErrDisagree = errors.New("results disagree with the report's summary")

// Summary checks the lines written against the report's per-state totals,
// then writes the totals: the summary line of JSON lines, or the CSV
// summary. It flushes everything; the results are complete only when it
// returns nil.
func (w *Writer) Summary(s *spoolv1.ReportSummary) error {
	if err := w.check(s); err != nil {
		return err
	}
	if w.format == JSONLines {
		type stateTotal struct {
			State     string `json:"state"`
			Rows      int64  `json:"rows"`
			AmountSum string `json:"amount_sum"`
		}
		sum := struct {
			JobID  string       `json:"job_id"`
			State  string       `json:"job_state"`
			Rows   int64        `json:"rows"`
			Totals []stateTotal `json:"totals"`
		}{JobID: s.GetJob().GetJobId(), State: progress.State(s.GetJob().GetState()), Rows: w.rows, Totals: []stateTotal{}}
		for _, t := range s.GetTotals() {
			sum.Totals = append(sum.Totals, stateTotal{State: report.TxState(t.GetState()), Rows: t.GetRows(), AmountSum: t.GetAmountSum()})
		}
		if err := w.jsonLine("summary", sum); err != nil {
			return err
		}
		return w.flush()
	}
	// A job without ledger rows still gets a file that says which columns
	// it would have.
	if err := w.header(); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	sw := csv.NewWriter(w.summary)
	rows := [][]string{SummaryColumns}
	for _, t := range s.GetTotals() {
		rows = append(rows, []string{report.TxState(t.GetState()), strconv.FormatInt(t.GetRows(), 10), Cell(t.GetAmountSum())})
	}
	if err := sw.WriteAll(rows); err != nil {
		return fmt.Errorf("write results summary: %w", err)
	}
	return nil
}

// check compares the lines' own totals with the report's.
func (w *Writer) check(s *spoolv1.ReportSummary) error {
	var diffs []string
	seen := map[spoolv1.TransactionState]bool{}
	for _, t := range s.GetTotals() {
		seen[t.GetState()] = true
		mine := w.totals[t.GetState()]
		if mine == nil {
			mine = &total{}
		}
		if mine.rows != t.GetRows() || mine.sum.String() != t.GetAmountSum() {
			diffs = append(diffs, fmt.Sprintf("%s: %d rows summing %s here, %d summing %s in the report",
				report.TxState(t.GetState()), mine.rows, mine.sum.String(), t.GetRows(), t.GetAmountSum()))
		}
	}
	for st, mine := range w.totals {
		if !seen[st] {
			diffs = append(diffs, fmt.Sprintf("%s: %d rows here, none in the report", report.TxState(st), mine.rows))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		return fmt.Errorf("%w: %s", ErrDisagree, strings.Join(diffs, "; "))
	}
	return nil
}

func (w *Writer) flush() error {
	if w.csv != nil {
		w.csv.Flush()
		if err := w.csv.Error(); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
	}
	if err := w.out.Flush(); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func (w *Writer) jsonLine(key string, v any) error {
	b, err := json.Marshal(map[string]any{key: v})
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	b = append(b, '\n')
	if _, err := w.out.Write(b); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// Cell neutralises a text cell a spreadsheet would run as a formula by
// prefixing an apostrophe; a signed number stays as it is.
func Cell(s string) string {
	if s == "" || !strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return s
	}
	if (s[0] == '-' || s[0] == '+') && decimal.Valid(s) {
		return s
	}
	return "'" + s
}
