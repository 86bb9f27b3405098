package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// grpcurl returns the pinned grpcurl that `make tools` builds:
// $SPOOL_GRPCURL, or bin/grpcurl at the repository root.
func grpcurl(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SPOOL_GRPCURL"); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "bin", "grpcurl"))
	require.NoError(t, err)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("grpcurl not found at %s: run `make tools` (or set SPOOL_GRPCURL)", p)
	}
	return p
}

func runGrpcurl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	// As the README's examples: the stack's CA and an admin token.
	cmd := exec.Command(grpcurl(t), append([]string{"-cacert", pki.CAFile(), "-H", "authorization: Bearer " + adminToken}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "grpcurl %v: %s", args, stderr.String())
	return string(out)
}

// TestGrpcurlAdHoc drives the services the way a person does with grpcurl:
// list them, stream a few rows, and watch the job to its end.
func TestGrpcurlAdHoc(t *testing.T) {
	s := startStack(t, 2, nil)

	require.Contains(t, strings.Fields(runGrpcurl(t, "", s.Ingestor.Addr, "list")), "spool.v1.IngestService")
	require.Contains(t, strings.Fields(runGrpcurl(t, "", s.Dispatchers[0].Addr, "list")), "spool.v1.DispatchService")
	desc := runGrpcurl(t, "", s.Ingestor.Addr, "describe", "spool.v1.IngestService")
	require.Contains(t, desc, "rpc StreamFile ( stream .spool.v1.StreamFileRequest )")

	// A client stream is a sequence of JSON messages on stdin.
	in := `{"header": {"fileName": "adhoc.csv", "columns": ["employee_id", "name", "amount"]}}
{"rows": {"rows": [{"fields": ["E1", "Ada", "10.00"]}, {"fields": ["E2", "Grace", "20.00"]}]}}
{"rows": {"rows": [{"fields": ["E3", "Alan", "30.00"]}]}}`
	var resp struct {
		JobID         string `json:"jobId"`
		RowsReceived  string `json:"rowsReceived"`
		RowsPublished string `json:"rowsPublished"`
	}
	require.NoError(t, json.Unmarshal([]byte(runGrpcurl(t, in, "-d", "@", s.Ingestor.Addr, "spool.v1.IngestService/StreamFile")), &resp))
	require.NotEmpty(t, resp.JobID)
	require.Equal(t, "3", resp.RowsPublished)

	// WatchJob streams until the final message, then grpcurl exits 0.
	out := runGrpcurl(t, "", "-d", `{"jobId": "`+resp.JobID+`"}`, s.Dispatchers[1].Addr, "spool.v1.DispatchService/WatchJob")
	dec := json.NewDecoder(strings.NewReader(out))
	var last struct {
		Progress struct {
			Final bool `json:"final"`
			Job   struct {
				State     string `json:"state"`
				Delivered string `json:"delivered"`
				Total     string `json:"total"`
			} `json:"job"`
		} `json:"progress"`
	}
	n := 0
	for dec.More() {
		require.NoError(t, dec.Decode(&last))
		n++
	}
	require.Positive(t, n)
	require.True(t, last.Progress.Final, "last message of the watch is not final:\n%s", out)
	require.Equal(t, "JOB_STATE_COMPLETED", last.Progress.Job.State)
	require.Equal(t, "3", last.Progress.Job.Delivered)
	require.Equal(t, "3", last.Progress.Job.Total)

	// Exactly those rows reached the sink, once each.
	require.Equal(t, sinkTotals{Requests: 3, Distinct: 3}, getSinkTotals(t, s, resp.JobID))
	requireEachRowOnce(t, s, resp.JobID, 3)

	got := runGrpcurl(t, "", "-d", `{"jobId": "`+resp.JobID+`"}`, s.Ingestor.Addr, "spool.v1.IngestService/GetJob")
	require.Contains(t, got, "JOB_STATE_COMPLETED")
}
