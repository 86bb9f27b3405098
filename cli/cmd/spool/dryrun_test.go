package main

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestSendDryRun(t *testing.T) {
	file := "id,amount\ne1,10.50\ne2,x\ne3,3.00\n"
	preview := []*spoolv1.Envelope{
		{JobId: "dry-run", Row: 1, TransactionKey: "dry-run:1", Body: `{"employee":"e1","value":10.50}`},
		{JobId: "dry-run", Row: 3, TransactionKey: "dry-run:3", Body: `{"employee":"e3","value":3.00}`},
	}
	ingest := &spooltest.Ingest{Answer: &spoolv1.StreamFileResponse{
		RowsReceived: 3, RowsPublished: 2, RowsRejected: 1,
		Errors:  []*spoolv1.RowError{{Row: 2, Column: "amount", Reason: "not a decimal"}},
		Preview: preview,
		Job:     &spoolv1.Job{AmountColumn: "amount", Actual: &spoolv1.ControlTotals{AmountSum: "13.50"}},
	}}
	var rendered *spoolv1.RenderRequestsRequest
	disp := &spooltest.Dispatch{Render: func(req *spoolv1.RenderRequestsRequest) (*spoolv1.RenderRequestsResponse, error) {
		rendered = req
		out := &spoolv1.RenderRequestsResponse{}
		for _, e := range req.GetEnvelopes() {
			out.Requests = append(out.Requests, &spoolv1.RenderedRequest{
				Row: e.GetRow(), Method: "POST", Url: "https://pay.example/v1",
				Headers: []*spoolv1.HeaderValue{{Name: "Authorization", Value: "REDACTED"}, {Name: "Idempotency-Key", Value: e.GetTransactionKey()}},
				Body:    e.GetBody(),
			})
		}
		return out, nil
	}}
	h := newHarness(t)
	h.ingest(t, ingest)
	h.dispatch(t, dispB, disp)
	path := writeFile(t, "nov.csv", file)
	require.NoError(t, h.run("send", "-ingestor-addr", ingestorAddr, "-dispatcher-addrs", dispA+","+dispB, "-dry-run", "-preview", "2", "-amount-column", "amount", path))

	header, chunks := ingest.Received()
	sum := sha256.Sum256([]byte(file))
	require.Empty(t, cmp.Diff(&spoolv1.FileHeader{
		FileName: "nov.csv", Csv: &spoolv1.CsvOptions{Delimiter: ","}, AmountColumn: "amount",
		Control: &spoolv1.ControlTotals{Sha256: hex.EncodeToString(sum[:])}, DryRun: true, PreviewRows: 2,
	}, header, protocmp.Transform()))
	var sent []byte
	for _, c := range chunks {
		sent = append(sent, c...)
	}
	require.Equal(t, file, string(sent))
	require.True(t, proto.Equal(&spoolv1.RenderRequestsRequest{Envelopes: preview}, rendered), "the ingestor's envelopes are rendered as they are")
	require.Equal(t, `dry run of nov.csv: nothing was published, no job was created
rows: 3 read, 2 would be delivered, 1 rejected
amount sum (amount): 13.50
  row 2 (amount): not a decimal

the first rows' requests, as a dispatcher would send them (a real run's job id replaces "dry-run", in the keys made from it too):

row 1: POST https://pay.example/v1
Authorization: REDACTED
Idempotency-Key: dry-run:1

{"employee":"e1","value":10.50}

row 3: POST https://pay.example/v1
Authorization: REDACTED
Idempotency-Key: dry-run:3

{"employee":"e3","value":3.00}
`, h.stdout.String())
}

func TestSendDryRunWithoutPreviewAsksNoDispatcher(t *testing.T) {
	ingest := &spooltest.Ingest{Answer: &spoolv1.StreamFileResponse{RowsReceived: 1, RowsPublished: 1, Preview: []*spoolv1.Envelope{{Row: 1}}}}
	h := newHarness(t)
	h.ingest(t, ingest)
	require.NoError(t, h.run("send", "-ingestor-addr", ingestorAddr, "-dispatcher-addrs", dispA, "-dry-run", "-preview", "0", writeFile(t, "a.csv", "a\n1\n")))
	require.Equal(t, "dry run of a.csv: nothing was published, no job was created\nrows: 1 read, 1 would be delivered, 0 rejected\n", h.stdout.String())
	require.ErrorContains(t, h.run("send", "-dry-run", "-preview", "21", "x.csv"), "-preview 21: want 0 to 20")
}
