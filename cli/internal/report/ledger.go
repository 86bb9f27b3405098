package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/spoolhq/spool/cli/internal/progress"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// TxState names a ledger state for people: "UNKNOWN", "DELIVERED".
func TxState(s spoolv1.TransactionState) string {
	return strings.TrimPrefix(s.String(), "TRANSACTION_STATE_")
}

// Ledger writes a reconciliation report as the dispatcher streams it:
// entries arrive grouped by state, UNKNOWN first, so each group gets a
// heading and a table of row, business key, amount, attempts, last status,
// the third party's reference (… when it was cut), reason and who resolved the row by hand; the summary closes it
// with per-state totals and amount sums.
// Entries are written as they come, so a report of a million rows needs no
// memory for them.
type Ledger struct {
	w       io.Writer
	json    bool
	tw      *tabwriter.Writer
	state   spoolv1.TransactionState
	started bool
}

// NewLedger returns a report writer; asJSON writes one protobuf JSON object
// per line instead of tables.
func NewLedger(w io.Writer, asJSON bool) *Ledger { return &Ledger{w: w, json: asJSON} }

// Entry writes one ledger entry.
func (l *Ledger) Entry(e *spoolv1.LedgerEntry) error {
	if l.json {
		return l.jsonLine("entry", e)
	}
	if !l.started || e.GetState() != l.state {
		if err := l.flush(); err != nil {
			return err
		}
		if l.started {
			fmt.Fprintln(l.w)
		}
		l.started, l.state = true, e.GetState()
		fmt.Fprintf(l.w, "%s\n", TxState(e.GetState()))
		l.tw = tabwriter.NewWriter(l.w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(l.tw, "row\tbusiness key\tamount\tattempts\tlast status\treference\treason\tresolved by")
	}
	status := "-"
	if e.GetLastStatus() != 0 {
		status = fmt.Sprint(e.GetLastStatus())
	}
	ref := e.GetReference()
	if e.GetReferenceTruncated() {
		ref += "…"
	}
	_, err := fmt.Fprintf(l.tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", e.GetRow(), orDash(e.GetBusinessKey()), orDash(e.GetAmount()),
		e.GetAttempts(), status, orDash(ref), orDash(e.GetReason()), resolvedBy(e))
	return err
}

// resolvedBy names who settled a row by hand: the person who asked, and
// the one who approved under four-eyes.
func resolvedBy(e *spoolv1.LedgerEntry) string {
	switch {
	case e.GetResolvedBy() == "":
		return "-"
	case e.GetApprovedBy() == "":
		return e.GetResolvedBy()
	}
	return e.GetResolvedBy() + ", approved by " + e.GetApprovedBy()
}

// Summary writes the closing totals.
func (l *Ledger) Summary(s *spoolv1.ReportSummary) error {
	if l.json {
		return l.jsonLine("summary", s)
	}
	if err := l.flush(); err != nil {
		return err
	}
	if l.started {
		fmt.Fprintln(l.w)
	}
	j := s.GetJob()
	fmt.Fprintf(l.w, "job %s: %s\n", j.GetJobId(), progress.State(j.GetState()))
	tw := tabwriter.NewWriter(l.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "state\trows\tamount")
	for _, t := range s.GetTotals() {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", TxState(t.GetState()), t.GetRows(), orDash(t.GetAmountSum()))
	}
	return tw.Flush()
}

func (l *Ledger) flush() error {
	if l.tw == nil {
		return nil
	}
	err := l.tw.Flush()
	l.tw = nil
	return err
}

// jsonLine writes {"<key>": m} on one line, m in protobuf JSON.
func (l *Ledger) jsonLine(key string, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	b, err = json.Marshal(map[string]json.RawMessage{key: b})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(l.w, string(b))
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
