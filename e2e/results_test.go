package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/decimal"
	"github.com/spoolhq/spool/platform/emulator/emutest"
)

// TestResultsCarryTheSinksReferences sends a file of 10 000 rows (2 000
// with -short) through 2 dispatchers that capture the destination's
// reference from its answers' body (/id), while the sink refuses every
// 50th row. spool results must then have one line per row, each delivered
// line with exactly the reference the sink issued for that row and each
// refused one with none, and per-state sums equal to the report's, in
// both formats.
func TestResultsCarryTheSinksReferences(t *testing.T) {
	rows := 10_000
	if testing.Short() {
		rows = 2_000
	}
	s := startStack(t, 2, func(o *stack.Options) {
		o.SinkArgs = []string{"-reject-every", "50"}
		o.DispatcherArgs = []string{"-reference-from", "body:/id"}
	})
	out, _ := runCLI(t, s, "send", "-business-key", "employee_id,pay_date", "-amount-column", "amount", writeSample(t, rows))
	jobID := jobIDFrom(t, out)
	waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, 5*time.Minute, "every row settled", func(j *spoolv1.Job) bool {
		return j.GetState() == spoolv1.JobState_JOB_STATE_COMPLETED
	})
	// The job list finds it among the completed jobs of the last hour.
	out, err := runCLI(t, s, "jobs", "-state", "completed", "-since", "1h")
	require.NoError(t, err, out)
	require.Contains(t, out, jobID)
	require.Contains(t, out, fmt.Sprintf("%d/%d", rows, rows))
	sink := sinkLedger(t, s, jobID)
	report := reportJob(t, s.Dispatchers[1].Addr, jobID)

	dir := t.TempDir()
	csvPath := filepath.Join(dir, "results.csv")
	out, err = runCLI(t, s, "results", "-o", csvPath, jobID)
	require.NoError(t, err, out)

	f, err := os.Open(csvPath)
	require.NoError(t, err)
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	header, err := r.Read()
	require.NoError(t, err)
	col := map[string]int{}
	for i, c := range header {
		col[c] = i
	}
	seen := map[int64]bool{}
	sums := map[string]*decimal.Total{}
	counts := map[string]int64{}
	for {
		line, err := r.Read()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		row, err := strconv.ParseInt(line[col["row"]], 10, 64)
		require.NoError(t, err)
		require.False(t, seen[row], "row %d listed twice", row)
		seen[row] = true
		state, ref := line[col["state"]], line[col["reference"]]
		switch state {
		case "DELIVERED":
			require.NotEmpty(t, sink[row].Reference, "the sink issued row %d no reference", row)
			require.Equal(t, sink[row].Reference, ref, "row %d", row)
		case "REJECTED":
			require.Zero(t, row%50, "row %d refused, but the sink refuses only every 50th", row)
			require.Empty(t, ref, "row %d was refused: the sink issued no reference", row)
		default:
			t.Fatalf("row %d ended %s", row, state)
		}
		if sums[state] == nil {
			sums[state] = &decimal.Total{}
		}
		sums[state].Add(line[col["amount"]])
		counts[state]++
	}
	require.Len(t, seen, rows, "one line per row")

	summary, err := os.ReadFile(filepath.Join(dir, "results.summary.csv"))
	require.NoError(t, err)
	totals, err := csv.NewReader(bytes.NewReader(summary)).ReadAll()
	require.NoError(t, err)
	want := [][]string{{"state", "rows", "amount_sum"}}
	for _, st := range report.summary.GetTotals() {
		name := ledgerStateName(st.GetState())
		want = append(want, []string{name, strconv.FormatInt(st.GetRows(), 10), st.GetAmountSum()})
		require.Equal(t, st.GetRows(), counts[name], "%s rows in the file and the report", name)
		require.Equal(t, st.GetAmountSum(), sums[name].String(), "%s sum of the file's amounts and the report's", name)
	}
	require.Equal(t, want, totals, "the summary file is the report's totals")
	require.EqualValues(t, rows/50, counts["REJECTED"])

	// The same as JSON lines, with the summary as the last line.
	out, err = runCLI(t, s, "results", "-format", "jsonl", "-o", filepath.Join(dir, "results.jsonl"), jobID)
	require.NoError(t, err, out)
	jf, err := os.Open(filepath.Join(dir, "results.jsonl"))
	require.NoError(t, err)
	defer jf.Close()
	sc := bufio.NewScanner(jf)
	n := 0
	var last struct {
		Result *struct {
			Row       int64  `json:"row"`
			State     string `json:"state"`
			Reference string `json:"reference"`
		} `json:"result"`
		Summary *struct {
			Rows   int64 `json:"rows"`
			Totals []struct {
				State     string `json:"state"`
				Rows      int64  `json:"rows"`
				AmountSum string `json:"amount_sum"`
			} `json:"totals"`
		} `json:"summary"`
	}
	for sc.Scan() {
		last.Result, last.Summary = nil, nil
		require.NoError(t, json.Unmarshal(sc.Bytes(), &last))
		if last.Result != nil {
			n++
			if last.Result.State == "DELIVERED" {
				require.Equal(t, sink[last.Result.Row].Reference, last.Result.Reference, "row %d", last.Result.Row)
			}
		}
	}
	require.NoError(t, sc.Err())
	require.Equal(t, rows, n)
	require.NotNil(t, last.Summary, "the last line is the summary")
	require.EqualValues(t, rows, last.Summary.Rows)
	for i, st := range report.summary.GetTotals() {
		require.Equal(t, st.GetAmountSum(), last.Summary.Totals[i].AmountSum)
		require.Equal(t, st.GetRows(), last.Summary.Totals[i].Rows)
	}
}

func ledgerStateName(s spoolv1.TransactionState) string {
	return spoolv1.TransactionState_name[int32(s)][len("TRANSACTION_STATE_"):]
}

// TestDryRunShowsTheRequests runs spool send -dry-run against a whole
// stack whose dispatchers add a secret header: the totals are printed,
// the first rows' requests are shown with the secret redacted and the body
// the sink would get, and nothing reaches the queue, the table or the sink.
func TestDryRunShowsTheRequests(t *testing.T) {
	s := startStack(t, 1, func(o *stack.Options) {
		o.DispatcherArgs = []string{"-destination-header", "Authorization: Bearer s3cret-token"}
	})
	path := writeSample(t, 50)
	out, err := runCLI(t, s, "send", "-dry-run", "-preview", "2", "-business-key", "employee_id,pay_date", "-amount-column", "amount", path)
	require.NoError(t, err, out)
	require.Contains(t, out, "nothing was published, no job was created")
	require.Contains(t, out, "rows: 50 read, 50 would be delivered, 0 rejected")
	require.Contains(t, out, "row 1: POST "+s.Sink.Addr)
	require.Contains(t, out, "Authorization: REDACTED")
	require.NotContains(t, out, "s3cret-token")
	require.Contains(t, out, "Idempotency-Key: bk:")
	require.Contains(t, out, `"spool_job_id":"dry-run","spool_row":2}`)

	out, err = runCLI(t, s, "jobs")
	require.NoError(t, err, out)
	require.Equal(t, 1, strings.Count(out, "\n"), "no job was created: %s", out)
	var stats sinkTotals
	getJSON(t, s.Sink.Addr+"/stats", &stats)
	require.Zero(t, stats.Requests)
	// Nor is anything waiting on the queue, in flight or delayed: the
	// sink's count alone would miss a message not yet delivered.
	attrs, err := sqs.NewFromConfig(emutest.Config(s.SQS.Addr)).GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(stackEnv(s.Env)["SPOOL_QUEUE_URL"]),
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			types.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		},
	})
	require.NoError(t, err)
	require.Len(t, attrs.Attributes, 3)
	for name, n := range attrs.Attributes {
		require.Equal(t, "0", n, "%s: nothing was published", name)
	}
}
