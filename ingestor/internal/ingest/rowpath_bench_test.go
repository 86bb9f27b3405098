package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/grpcserve"
)

// ackSQS acknowledges every entry at once: the row path's cost without
// the SDK's or a queue's, which the make bench ingest rows add.
type ackSQS struct{}

func (ackSQS) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	out := &sqs.SendMessageBatchOutput{Successful: make([]types.SendMessageBatchResultEntry, len(in.Entries))}
	for i, e := range in.Entries {
		out.Successful[i] = types.SendMessageBatchResultEntry{Id: e.Id, MessageId: aws.String("m")}
	}
	return out, nil
}

// BenchmarkRowPath measures what the ingestor spends on a row between the
// gRPC stream and SendMessageBatch: reading the row, checking it, building
// and encoding its envelope, batching it and tracking its acknowledgement,
// for 100 000 six-column rows in RowBatch messages and in CSV chunks, with a real publisher
// over an SQS that acknowledges at once. It reports CPU time and heap
// allocations per row, client included (it runs in-process).
//
//	cd ingestor && go test -run '^$' -bench RowPath -benchtime 5x -count 3 ./internal/ingest/
func BenchmarkRowPath(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	srv := grpcserve.New(log, grpcserve.Security{})
	spoolv1.RegisterIngestServiceServer(srv, New(newFakeJobs(), Config{
		NewPublisher: func() (Publisher, error) {
			return publish.New(ackSQS{}, publish.Options{QueueURL: "q", MaxMessageBytes: 256 << 10})
		},
		Log: log, ProgressInterval: time.Second, AbortAfter: time.Minute,
	}))
	c := serveOn(b, srv, grpc.WithTransportCredentials(insecure.NewCredentials()))

	columns := []string{"employee_id", "name", "iban", "amount", "currency", "pay_date"}
	const rows, batch, chunk = 100_000, 500, 64 << 10
	row := func(r int) []string {
		n := strconv.Itoa(r)
		return []string{"E" + n, "Employee " + n, "DE0000" + n, "1234.56", "EUR", "2026-11-30"}
	}
	// The two ways a client streams a file: rows it split (RowBatch), or
	// the file's bytes in 64 KiB chunks (spool send), which the ingestor
	// parses.
	ways := []struct {
		name string
		msgs func(file string) []*spoolv1.StreamFileRequest
	}{
		{"rows", func(file string) []*spoolv1.StreamFileRequest {
			msgs := []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{FileName: file, Columns: columns})}
			for i := 0; i < rows; i += batch {
				rb := &spoolv1.RowBatch{}
				for r := i + 1; r <= i+batch; r++ {
					rb.Rows = append(rb.Rows, &spoolv1.Row{Fields: row(r)})
				}
				msgs = append(msgs, &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Rows{Rows: rb}})
			}
			return msgs
		}},
		{"chunks", func(file string) []*spoolv1.StreamFileRequest {
			var csv bytes.Buffer
			csv.WriteString(strings.Join(columns, ",") + "\n")
			for r := 1; r <= rows; r++ {
				csv.WriteString(strings.Join(row(r), ",") + "\n")
			}
			msgs := []*spoolv1.StreamFileRequest{hdr(&spoolv1.FileHeader{FileName: file})}
			for b := csv.Bytes(); len(b) > 0; b = b[min(chunk, len(b)):] {
				msgs = append(msgs, chunkMsg(string(b[:min(chunk, len(b))])))
			}
			return msgs
		}},
	}
	ctx := context.Background()
	streams := 0
	for _, w := range ways {
		b.Run(w.name, func(b *testing.B) {
			var cpu time.Duration
			var mallocs uint64
			n := 0
			for b.Loop() {
				// A new file each time: the same file would be the same job.
				streams++
				n++
				msgs := w.msgs(fmt.Sprintf("bench-%d.csv", streams))
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				cpu0 := processCPU()
				resp, err := send(ctx, c, msgs...)
				cpu += processCPU() - cpu0
				runtime.ReadMemStats(&after)
				mallocs += after.Mallocs - before.Mallocs
				if err != nil {
					b.Fatal(err)
				}
				if resp.GetRowsPublished() != rows {
					b.Fatalf("published %d rows, want %d", resp.GetRowsPublished(), rows)
				}
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n*rows), "cpu-ns/row")
			b.ReportMetric(float64(mallocs)/float64(n*rows), "allocs/row")
		})
	}
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
