package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
)

// inputProfiles are the ingestor's profiles in TestInputContract. The body
// carries spool_job_id and spool_row because the sink files transactions
// by them.
const inputProfiles = `
profiles:
  - name: strict
    amount_column: amount
    columns:
      - {name: id, pattern: "E[0-9]+"}
      - {name: amount, type: decimal, scale: 2}
  - name: lenient
    row_policy: skip-rows
    amount_column: amount
    columns:
      - {name: id, pattern: "E[0-9]+"}
      - {name: amount, type: decimal, scale: 2}
    body:
      - {name: spool_job_id, meta: job_id}
      - {name: spool_row, meta: row}
      - {name: employee, column: id}
      - {name: amount, column: amount, as_number: true}
`

// TestInputContract sends the same file with three invalid rows under a
// reject-file profile, which must deliver nothing, and under a skip-rows
// profile, which must deliver every valid row once (as the profile's
// mapped body) and report the invalid ones. SPOOL_E2E_INPUT_ROWS sets the
// size (default 300).
func TestInputContract(t *testing.T) {
	rows := envInt(t, "SPOOL_E2E_INPUT_ROWS", 300)
	profiles := filepath.Join(t.TempDir(), "profiles.yaml")
	require.NoError(t, os.WriteFile(profiles, []byte(inputProfiles), 0o600))
	s := startStack(t, 1, func(o *stack.Options) { o.IngestorArgs = append(o.IngestorArgs, "-profiles", profiles) })

	bad := map[int]string{rows / 4: "X1,1.00", rows / 2: "E2,1.005", 3 * rows / 4: "E3,\"unclosed"}
	var b strings.Builder
	b.WriteString("id,amount\n")
	for r := 1; r <= rows; r++ {
		if line, ok := bad[r]; ok {
			b.WriteString(line + "\n")
			continue
		}
		fmt.Fprintf(&b, "E%d,%d.%02d\n", r, r, r%100)
	}
	// An unclosed quote runs to the end of the file, taking every line
	// after it into its field: it is moved to the end, so that it costs
	// one row.
	file := strings.Replace(b.String(), "E3,\"unclosed\n", "", 1) + "E3,\"unclosed\n"
	want := rows - len(bad)

	client := spoolv1.NewIngestServiceClient(dial(t, s.Ingestor.Addr))
	// sendFile streams the file in chunks of 4 KiB under a profile.
	sendFile := func(profile string) (*spoolv1.StreamFileResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stream, err := client.StreamFile(ctx)
		require.NoError(t, err)
		require.NoError(t, stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: &spoolv1.FileHeader{
			FileName: profile + ".csv", JobKey: "input-" + profile, Profile: profile,
		}}}))
		for rest := file; rest != ""; {
			n := min(4096, len(rest))
			if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: []byte(rest[:n])}}); err != nil {
				break // the server ended the call; CloseAndRecv says why
			}
			rest = rest[n:]
		}
		return stream.CloseAndRecv()
	}

	// reject-file: the job is REJECTED and nothing of it is delivered.
	_, err := sendFile("strict")
	st := status.Convert(err)
	require.Equal(t, codes.InvalidArgument, st.Code(), "%v", err)
	var strict *spoolv1.StreamFileResponse
	for _, d := range st.Details() {
		if r, ok := d.(*spoolv1.StreamFileResponse); ok {
			strict = r
		}
	}
	require.NotNil(t, strict)
	require.EqualValues(t, len(bad), strict.GetRowsRejected())
	got, err := client.GetJob(context.Background(), &spoolv1.GetJobRequest{JobId: strict.GetJobId()})
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_REJECTED, got.GetJob().GetState())

	// skip-rows: the valid rows are delivered once each, the invalid ones
	// reported.
	resp, err := sendFile("lenient")
	require.NoError(t, err)
	require.EqualValues(t, want, resp.GetRowsPublished())
	require.EqualValues(t, len(bad), resp.GetRowsRejected())
	var reported []string
	for _, e := range resp.GetErrors() {
		reported = append(reported, e.GetColumn())
	}
	require.ElementsMatch(t, []string{"id", "amount", "amount"}, reported)
	p := watchToEnd(t, s.Dispatchers[0].Addr, resp.GetJobId(), 2*time.Minute)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, p.GetJob().GetState())
	require.EqualValues(t, want, p.GetJob().GetDelivered())
	delivered := sinkRows(t, s, resp.GetJobId())
	require.Len(t, delivered, want)
	for r, n := range delivered {
		require.Equal(t, 1, n, "row %d", r)
	}

	// The rejected job's messages were dropped, never delivered: the
	// lenient job completed behind them on the same queue.
	require.Empty(t, sinkRows(t, s, strict.GetJobId()))
}
