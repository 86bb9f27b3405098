package results_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/cli/internal/results"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

const (
	delivered = spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED
	rejected  = spoolv1.TransactionState_TRANSACTION_STATE_REJECTED
	unknown   = spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN
)

func entries() []*spoolv1.LedgerEntry {
	return []*spoolv1.LedgerEntry{
		{Row: 3, BusinessKey: "E3|2026-11", Amount: "7.25", State: unknown, Attempts: 1, Reason: "reset"},
		{Row: 5, BusinessKey: "E5|2026-11", Amount: "1.00", State: delivered, Attempts: 1, Reason: "resolved: delivered", ResolvedBy: "ops-ann", ApprovedBy: "ops-bob"},
		{Row: 1, BusinessKey: "E1|2026-11", Amount: "10.50", State: delivered, Attempts: 1, LastStatus: 200, Reference: "pay_1"},
		{Row: 2, BusinessKey: "E2|2026-11", Amount: "-0.5", State: delivered, Attempts: 2, LastStatus: 200, Reference: strings.Repeat("r", 256), ReferenceTruncated: true},
		{Row: 4, BusinessKey: "=HYPERLINK(1)", Amount: "3", State: rejected, Attempts: 1, LastStatus: 422, Reason: "422 Unprocessable Entity: =cmd|' /C calc'!A0"},
	}
}

func summary() *spoolv1.ReportSummary {
	return &spoolv1.ReportSummary{
		Job: &spoolv1.Job{JobId: "job-1", State: spoolv1.JobState_JOB_STATE_COMPLETED},
		Totals: []*spoolv1.StateTotal{
			{State: unknown, Rows: 1, AmountSum: "7.25"},
			{State: delivered, Rows: 3, AmountSum: "11.00"},
			{State: rejected, Rows: 1, AmountSum: "3"},
		},
	}
}

func TestCSV(t *testing.T) {
	var out, sum bytes.Buffer
	w := results.New(&out, &sum, results.CSV)
	for _, e := range entries() {
		require.NoError(t, w.Entry(e))
	}
	require.NoError(t, w.Summary(summary()))

	lines, err := csv.NewReader(&out).ReadAll()
	require.NoError(t, err)
	require.Equal(t, [][]string{
		results.Columns,
		{"3", "E3|2026-11", "7.25", "UNKNOWN", "1", "", "", "", "reset", "", ""},
		{"5", "E5|2026-11", "1.00", "DELIVERED", "1", "", "", "", "resolved: delivered", "ops-ann", "ops-bob"},
		{"1", "E1|2026-11", "10.50", "DELIVERED", "1", "200", "pay_1", "", "", "", ""},
		{"2", "E2|2026-11", "-0.5", "DELIVERED", "2", "200", strings.Repeat("r", 256), "true", "", "", ""},
		{"4", "'=HYPERLINK(1)", "3", "REJECTED", "1", "422", "", "", "422 Unprocessable Entity: =cmd|' /C calc'!A0", "", ""},
	}, lines)

	totals, err := csv.NewReader(&sum).ReadAll()
	require.NoError(t, err)
	require.Equal(t, [][]string{
		results.SummaryColumns, {"UNKNOWN", "1", "7.25"}, {"DELIVERED", "3", "11.00"}, {"REJECTED", "1", "3"},
	}, totals)
}

func TestJSONLines(t *testing.T) {
	var out bytes.Buffer
	w := results.New(&out, nil, results.JSONLines)
	for _, e := range entries() {
		require.NoError(t, w.Entry(e))
	}
	require.NoError(t, w.Summary(summary()))

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 6)
	var first struct{ Result results.Line }
	require.NoError(t, json.Unmarshal([]byte(lines[2]), &first))
	require.Equal(t, results.Line{Row: 1, BusinessKey: "E1|2026-11", Amount: "10.50", State: "DELIVERED", Attempts: 1, LastStatus: 200, Reference: "pay_1"}, first.Result)
	require.JSONEq(t, `{"result":{"row":5,"business_key":"E5|2026-11","amount":"1.00","state":"DELIVERED","attempts":1,
		"reason":"resolved: delivered","resolved_by":"ops-ann","approved_by":"ops-bob"}}`, lines[1])
	require.JSONEq(t, `{"summary":{"job_id":"job-1","job_state":"COMPLETED","rows":5,"totals":[
		{"state":"UNKNOWN","rows":1,"amount_sum":"7.25"},
		{"state":"DELIVERED","rows":3,"amount_sum":"11.00"},
		{"state":"REJECTED","rows":1,"amount_sum":"3"}]}}`, lines[5])
}

func TestSummaryDisagreeing(t *testing.T) {
	tests := []struct {
		name    string
		drop    int // index of an entry the stream lost; -1 none
		twice   int // index of an entry the stream repeated; -1 none
		wantErr string
	}{
		{name: "a lost row", drop: 2, twice: -1, wantErr: "DELIVERED: 2 rows summing 0.50 here, 3 summing 11.00 in the report"},
		{name: "a repeated row", drop: -1, twice: 0, wantErr: "UNKNOWN: 2 rows summing 14.50 here, 1 summing 7.25 in the report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range []results.Format{results.CSV, results.JSONLines} {
				var out, sum bytes.Buffer
				w := results.New(&out, &sum, f)
				for i, e := range entries() {
					if i == tt.drop {
						continue
					}
					require.NoError(t, w.Entry(e))
					if i == tt.twice {
						require.NoError(t, w.Entry(e))
					}
				}
				err := w.Summary(summary())
				require.ErrorIs(t, err, results.ErrDisagree)
				require.ErrorContains(t, err, tt.wantErr)
				require.Empty(t, sum.String(), "no summary for results that do not add up")
			}
		})
	}
}

func TestEmptyJobHasAHeader(t *testing.T) {
	var out, sum bytes.Buffer
	w := results.New(&out, &sum, results.CSV)
	require.NoError(t, w.Summary(&spoolv1.ReportSummary{Job: &spoolv1.Job{JobId: "j"}}))
	require.Equal(t, strings.Join(results.Columns, ",")+"\n", out.String())
	require.Equal(t, "state,rows,amount_sum\n", sum.String())
}

func TestCell(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "pay_1": "pay_1", "-10.50": "-10.50", "+3": "+3", "--5": "'--5", "-x": "'-x",
		"=1+1": "'=1+1", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx", "\rx": "'\rx", "+": "'+",
	} {
		require.Equal(t, want, results.Cell(in), "cell %q", in)
	}
}
