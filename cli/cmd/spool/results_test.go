package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/cli/internal/spooltest"
)

func TestResultsCSVFiles(t *testing.T) {
	h := newHarness(t)
	h.dispatch(t, dispB, &spooltest.Dispatch{Report: ledgerReport})
	out := filepath.Join(t.TempDir(), "results.csv")
	require.NoError(t, h.run("results", "-dispatcher-addrs", dispA+","+dispB, "-o", out, "job-1"))

	rows, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, `row,business_key,amount,state,attempts,last_status,reference,reference_truncated,reason,resolved_by,approved_by
7,E7,120.00,UNKNOWN,1,,,,dispatcher died during the request,,
1,E1,10.50,DELIVERED,1,200,pay_1,,,,
2,E2,9.50,DELIVERED,2,201,,,,,
3,E3,0.00,DELIVERED,1,,,,"resolved: delivered, confirmed at the destination",ops-ann,ops-bob
`, string(rows))
	sum, err := os.ReadFile(filepath.Join(filepath.Dir(out), "results.summary.csv"))
	require.NoError(t, err)
	require.Equal(t, "state,rows,amount_sum\nUNKNOWN,1,120.00\nDELIVERED,3,20.00\n", string(sum))
	require.Empty(t, h.stdout.String())
	require.Contains(t, h.stderr.String(), "4 rows of job job-1 written to "+out)
}

func TestResultsJSONLinesToStdout(t *testing.T) {
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Report: ledgerReport})
	require.NoError(t, h.run("results", "-dispatcher-addrs", dispA, "-format", "jsonl", "job-1"))
	lines := strings.Split(strings.TrimSpace(h.stdout.String()), "\n")
	require.Len(t, lines, 5)
	require.JSONEq(t, `{"result":{"row":7,"business_key":"E7","amount":"120.00","state":"UNKNOWN","attempts":1,"reason":"dispatcher died during the request"}}`, lines[0])
	require.JSONEq(t, `{"summary":{"job_id":"job-1","job_state":"COMPLETED","rows":4,"totals":[
		{"state":"UNKNOWN","rows":1,"amount_sum":"120.00"},{"state":"DELIVERED","rows":3,"amount_sum":"20.00"}]}}`, lines[4])
}

func TestResultsCutShortLeavesNoFile(t *testing.T) {
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Report: ledgerReport[:2], ReportErr: status.Error(codes.Unavailable, "dispatcher stopping")})
	dir := t.TempDir()
	err := h.run("results", "-dispatcher-addrs", dispA, "-o", filepath.Join(dir, "results.csv"), "job-1")
	require.ErrorContains(t, err, "dispatcher stopping")
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, left, "neither the results nor a temporary file is left behind")
}

func TestResultsBadFormat(t *testing.T) {
	h := newHarness(t)
	h.dispatch(t, dispA, &spooltest.Dispatch{Report: ledgerReport})
	require.ErrorContains(t, h.run("results", "-dispatcher-addrs", dispA, "-format", "xlsx", "job-1"), "want csv or jsonl")
}
