package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
)

// maxQuoteRSSMiB is the ingestor's peak RSS allowed while it refuses a
// giant unterminated quote.
const maxQuoteRSSMiB = 64

// BenchmarkUnterminatedQuoteRSS streams a file that opens a quoted field
// and never closes it, 1 GiB generated on the fly, into a real ingestor
// process with its default limits. The ingestor must refuse it at the
// field limit (ResourceExhausted naming max-field-bytes) without
// buffering it, its peak RSS under 64 MiB. Run it once:
//
//	go test -run '^$' -bench UnterminatedQuoteRSS -benchtime 1x ./bench/
func BenchmarkUnterminatedQuoteRSS(b *testing.B) {
	bin := buildIngestor(b)
	ctx := context.Background()
	ddbURL := emutest.Start(b, emulator.DynamoDB)
	require.NoError(b, provision.EnsureTable(ctx, dynamodb.NewFromConfig(emutest.Config(ddbURL)), "jobs"))
	sqsURL := emutest.Start(b, emulator.SQS)
	queues, err := provision.EnsureQueue(ctx, sqs.NewFromConfig(emutest.Config(sqsURL)), "quote-"+uuid.NewString()[:8], provision.DefaultQueueOptions)
	require.NoError(b, err)
	p := startIngestor(b, bin, sqsURL, ddbURL, queues.URL)

	const total = 1 << 30
	sent, err := streamUnterminated(b, p.addr, total)
	rss := float64(peakRSS(b, p.cmd.Process.Pid)) / 1024
	p.stop(b)

	st := status.Convert(err)
	require.Equal(b, codes.ResourceExhausted, st.Code(), "%v", err)
	require.Contains(b, st.Message(), "row 1, column 2 (note): max-field-bytes=65536 exceeded")
	var subjects []string
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			subjects = append(subjects, q.GetViolations()[0].GetSubject())
		}
	}
	require.Equal(b, []string{"max-field-bytes"}, subjects)
	b.ReportMetric(rss, "rss-MiB")
	b.ReportMetric(float64(sent)/(1<<20), "sent-MiB")
	b.Logf("1 GiB unterminated quote: refused after the client sent %.1f MiB; ingestor peak RSS %.1f MiB", float64(sent)/(1<<20), rss)
	if rss >= maxQuoteRSSMiB {
		b.Fatalf("ingestor peak RSS %.1f MiB, the limit is %d MiB", rss, maxQuoteRSSMiB)
	}
}

// streamUnterminated sends a header row, a row that opens a quote, and
// then up to total bytes without a closing quote, until the server ends
// the call. It returns how much it sent and the call's error.
func streamUnterminated(b testing.TB, addr string, total int) (int, error) {
	b.Helper()
	stream, done := openStream(b, addr, 10*time.Minute)
	defer done()
	require.NoError(b, stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: &spoolv1.FileHeader{FileName: "quote.csv"}}}))
	first := []byte("id,note\n1,\"")
	require.NoError(b, stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: first}}))
	sent := len(first)
	chunk := bytes.Repeat([]byte("payroll data, never a closing quote\n"), (64<<10)/37)
	for sent < total {
		if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: chunk}}); err != nil {
			if !errors.Is(err, io.EOF) {
				return sent, err
			}
			break // the server ended the call; CloseAndRecv says why
		}
		sent += len(chunk)
	}
	_, err := stream.CloseAndRecv()
	return sent, err
}
