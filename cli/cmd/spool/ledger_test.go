package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func entry(row int64, st spoolv1.TransactionState, bk, amount string, attempts, last int32, reason string) *spoolv1.ReportJobResponse {
	return &spoolv1.ReportJobResponse{Msg: &spoolv1.ReportJobResponse_Entry{Entry: &spoolv1.LedgerEntry{
		JobId: "job-1", Row: row, State: st, BusinessKey: bk, Amount: amount, Attempts: attempts, LastStatus: last, Reason: reason,
	}}}
}

// resolved marks a row settled by hand by one person, with another's
// approval.
func resolved(m *spoolv1.ReportJobResponse) *spoolv1.ReportJobResponse {
	m.GetEntry().ResolvedBy, m.GetEntry().ApprovedBy = "ops-ann", "ops-bob"
	return m
}

func withReference(r *spoolv1.ReportJobResponse, ref string) *spoolv1.ReportJobResponse {
	r.GetEntry().Reference = ref
	return r
}

var ledgerReport = []*spoolv1.ReportJobResponse{
	entry(7, spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, "E7", "120.00", 1, 0, "dispatcher died during the request"),
	withReference(entry(1, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, "E1", "10.50", 1, 200, ""), "pay_1"),
	entry(2, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, "E2", "9.50", 2, 201, ""),
	resolved(entry(3, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, "E3", "0.00", 1, 0, "resolved: delivered, confirmed at the destination")),
	{Msg: &spoolv1.ReportJobResponse_Summary{Summary: &spoolv1.ReportSummary{
		Job: job(spoolv1.JobState_JOB_STATE_COMPLETED, 2, 0, 3),
		Totals: []*spoolv1.StateTotal{
			{State: spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, Rows: 1, AmountSum: "120.00"},
			{State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Rows: 3, AmountSum: "20.00"},
		},
	}}},
}

func TestReport(t *testing.T) {
	h := newHarness(t)
	h.dispatch(t, dispB, &spooltest.Dispatch{Report: ledgerReport})
	// The first dispatcher is unreachable: the next one answers.
	require.NoError(t, h.run("report", "-dispatcher-addrs", dispA+","+dispB, "job-1"))
	want := `UNKNOWN
row  business key  amount  attempts  last status  reference  reason                              resolved by
7    E7            120.00  1         -            -          dispatcher died during the request  -

DELIVERED
row  business key  amount  attempts  last status  reference  reason                                             resolved by
1    E1            10.50   1         200          pay_1      -                                                  -
2    E2            9.50    2         201          -          -                                                  -
3    E3            0.00    1         -            -          resolved: delivered, confirmed at the destination  ops-ann, approved by ops-bob

job job-1: COMPLETED
state      rows  amount
UNKNOWN    1     120.00
DELIVERED  3     20.00
`
	require.Equal(t, want, h.stdout.String())
}

func TestReportJSON(t *testing.T) {
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Report: ledgerReport})
	require.NoError(t, h.run("report", "-json", "-dispatcher-addrs", dispA, "job-1"))
	lines := strings.Split(strings.TrimSpace(h.stdout.String()), "\n")
	require.Len(t, lines, 5)
	var first struct {
		Entry struct {
			Row   string `json:"row"`
			State string `json:"state"`
		} `json:"entry"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.Equal(t, "7", first.Entry.Row)
	require.Equal(t, "TRANSACTION_STATE_UNKNOWN", first.Entry.State)
	require.Contains(t, lines[3], `"resolvedBy":"ops-ann","approvedBy":"ops-bob"`)
	require.True(t, strings.HasPrefix(lines[4], `{"summary":`))
}

func TestReportCutShort(t *testing.T) {
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Report: ledgerReport[:1], ReportErr: status.Error(codes.Unavailable, "dispatcher stopping")})
	h.dispatch(t, dispB, &spooltest.Dispatch{Report: ledgerReport})
	err := h.run("report", "-dispatcher-addrs", dispA+","+dispB, "job-1")
	require.ErrorContains(t, err, "dispatcher stopping", "a report cut after its first line is not silently restarted elsewhere")
}

func TestResolve(t *testing.T) {
	var got []*spoolv1.ResolveTransactionRequest
	disp := &spooltest.Dispatch{Resolve: func(req *spoolv1.ResolveTransactionRequest) (*spoolv1.ResolveTransactionResponse, error) {
		got = append(got, req)
		st := spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED
		if req.GetResolution() == spoolv1.Resolution_RESOLUTION_RESEND {
			st = spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED
		}
		return &spoolv1.ResolveTransactionResponse{Entry: &spoolv1.LedgerEntry{JobId: req.GetJobId(), Row: req.GetRow(), State: st}}, nil
	}}
	tests := []struct {
		name     string
		args     []string
		want     string
		wantErr  string
		wantCode int
	}{
		{name: "delivered", args: []string{"job-1", "7", "--delivered"}, want: "row 7 of job job-1 is now DELIVERED\n"},
		{name: "resend", args: []string{"--resend", "job-1", "7"}, want: "row 7 of job job-1 is now CLAIMED\n"},
		{name: "neither", args: []string{"job-1", "7"}, wantErr: "exactly one of --delivered and --resend", wantCode: 2},
		{name: "both", args: []string{"job-1", "7", "--delivered", "--resend"}, wantErr: "exactly one", wantCode: 2},
		{name: "bad row", args: []string{"job-1", "x", "--delivered"}, wantErr: `ROW "x"`, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.dispatch(t, dispA, disp)
			h.env["SPOOL_DISPATCHER_ADDRS"] = dispA
			err := h.run(append([]string{"resolve"}, tt.args...)...)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Equal(t, tt.wantCode, exitCode(err, &bytes.Buffer{}))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, h.stdout.String())
		})
	}
	require.Len(t, got, 2)
	require.Equal(t, spoolv1.Resolution_RESOLUTION_DELIVERED, got[0].GetResolution())
	require.Equal(t, spoolv1.Resolution_RESOLUTION_RESEND, got[1].GetResolution())
}

func TestPerFileFlagsIgnoreTheEnvironment(t *testing.T) {
	h := newHarness(t)
	ingest := &spooltest.Ingest{Answer: answer}
	h.ingest(t, ingest)
	h.env["SPOOL_INGESTOR_ADDR"] = ingestorAddr
	h.env["SPOOL_JOB_KEY"] = "exported-long-ago"
	h.env["SPOOL_ROWS"] = "5"
	h.env["SPOOL_AMOUNT_SUM"] = "1.00"
	path := writeFile(t, "nov.csv", "a\n1\n")
	require.NoError(t, h.run("send", "-no-watch", path))
	header, _ := ingest.Received()
	require.Empty(t, header.GetJobKey(), "a per-file flag never comes from the environment")
	require.Nil(t, header.GetControl().RowCount)
	require.Empty(t, header.GetControl().GetAmountSum())
	require.Len(t, header.GetControl().GetSha256(), 64)
}

func TestSendControlFlags(t *testing.T) {
	h := newHarness(t)
	ingest := &spooltest.Ingest{Answer: answer}
	h.ingest(t, ingest)
	path := writeFile(t, "nov.csv", "id,amount\n1,2.50\n")
	require.NoError(t, h.run("send", "-ingestor-addr", ingestorAddr, "-no-watch", "-rows", "1", "-amount-column", "amount", "-amount-sum", "2.5", "-business-key", "id, amount", "-profile", "payroll", path))
	header, _ := ingest.Received()
	require.Equal(t, "payroll", header.GetProfile())
	require.EqualValues(t, 1, header.GetControl().GetRowCount())
	require.Equal(t, "2.5", header.GetControl().GetAmountSum())
	require.Equal(t, "amount", header.GetAmountColumn())
	require.Equal(t, []string{"id", "amount"}, header.GetBusinessKeyColumns())
}

func TestSendExisting(t *testing.T) {
	h := newHarness(t)
	existing := job(spoolv1.JobState_JOB_STATE_COMPLETED, 1000, 0, 1000)
	h.ingest(t, &spooltest.Ingest{Answer: &spoolv1.StreamFileResponse{JobId: "job-1", Job: existing, Existing: true}})
	h.dispatch(t, dispA, &spooltest.Dispatch{Progress: []*spoolv1.JobProgress{jobProgress(existing, true)}})
	h.env["SPOOL_DISPATCHER_ADDRS"] = dispA
	path := writeFile(t, "nov.csv", "a\n1\n")
	require.NoError(t, h.run("send", "-ingestor-addr", ingestorAddr, path))
	require.Contains(t, h.stdout.String(), "already submitted as job job-1 (COMPLETED); nothing sent\n")
	require.Contains(t, h.stdout.String(), "job job-1 COMPLETED: delivered 1000 of 1000")
}
