// Package bench measures the ingestor as it runs in production: a built
// binary in its own process, fed over gRPC, publishing to the SQS emulator.
// Its one benchmark checks the service's central promise, that memory stays
// flat whatever the size of the file.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/provision"
)

// maxRSSRatio is how much more memory a file 100 times larger may take.
const maxRSSRatio = 1.3

// rowsPerMessage is how many rows the client puts in one RowBatch.
const rowsPerMessage = 100

// BenchmarkIngestRSS streams 10,000 rows, then 1,000,000 rows (skipped by
// -short), each through a fresh ingestor process, and compares the peak
// resident memory of the two processes. Run it once:
//
//	go test -run '^$' -bench IngestRSS -benchtime 1x ./bench/
func BenchmarkIngestRSS(b *testing.B) {
	bin := buildIngestor(b)
	ddbURL := emutest.Start(b, emulator.DynamoDB)
	ctx := context.Background()
	require.NoError(b, provision.EnsureTable(ctx, dynamodb.NewFromConfig(emutest.Config(ddbURL)), "jobs"))

	small := measure(b, bin, ddbURL, 10_000)
	b.ReportMetric(small.rssMiB, "rss-10k-MiB")
	b.ReportMetric(small.rowsPerSec, "rows/s-10k")
	if testing.Short() {
		b.Log("-short: the 1,000,000-row run and the ratio are skipped")
		return
	}
	large := measure(b, bin, ddbURL, 1_000_000)
	b.ReportMetric(large.rssMiB, "rss-1M-MiB")
	b.ReportMetric(large.rowsPerSec, "rows/s-1M")
	ratio := large.rssMiB / small.rssMiB
	b.ReportMetric(ratio, "rss-ratio")
	if ratio > maxRSSRatio {
		b.Fatalf("peak RSS grew %.2fx from 10k to 1M rows (%.1f → %.1f MiB); the limit is %.1fx", ratio, small.rssMiB, large.rssMiB, maxRSSRatio)
	}
}

type result struct {
	rssMiB     float64
	rowsPerSec float64
}

// measure streams rows through a fresh ingestor on a fresh SQS emulator, so
// that neither run inherits the other's memory, and returns the ingestor's
// peak RSS and the rate.
func measure(b *testing.B, bin, ddbURL string, rows int) result {
	b.Helper()
	ctx := context.Background()
	sqsURL := emutest.Start(b, emulator.SQS)
	queues, err := provision.EnsureQueue(ctx, sqs.NewFromConfig(emutest.Config(sqsURL)), "bench-"+uuid.NewString()[:8], provision.DefaultQueueOptions)
	require.NoError(b, err)

	p := startIngestor(b, bin, sqsURL, ddbURL, queues.URL)
	start := time.Now()
	resp := streamRows(b, p.addr, rows)
	elapsed := time.Since(start)
	require.EqualValues(b, rows, resp.GetRowsPublished())
	require.Equal(b, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState())

	rss := peakRSS(b, p.cmd.Process.Pid)
	p.stop(b)
	r := result{rssMiB: float64(rss) / 1024, rowsPerSec: float64(rows) / elapsed.Seconds()}
	b.Logf("%d rows: %.1f s, %.0f rows/s, ingestor peak RSS %.1f MiB", rows, elapsed.Seconds(), r.rowsPerSec, r.rssMiB)
	return r
}

// buildIngestor compiles the service into a temporary folder.
func buildIngestor(b testing.TB) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "ingestor")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/spoolhq/spool/ingestor/cmd/ingestor").CombinedOutput()
	require.NoError(b, err, "go build: %s", out)
	return bin
}

type process struct {
	cmd     *exec.Cmd
	addr    string
	done    chan struct{}
	stopped bool
}

// startIngestor starts the binary on a free port, configured through the
// environment as in a container, and waits until it reports SERVING.
func startIngestor(b testing.TB, bin, sqsURL, ddbURL, queueURL string) *process {
	b.Helper()
	port, err := emulator.FreePort()
	require.NoError(b, err)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	none := filepath.Join(b.TempDir(), "none")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"AWS_ENDPOINT_URL_SQS="+sqsURL, "AWS_ENDPOINT_URL_DYNAMODB="+ddbURL, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local", "AWS_SESSION_TOKEN=",
		"AWS_CONFIG_FILE="+none, "AWS_SHARED_CREDENTIALS_FILE="+none, "AWS_EC2_METADATA_DISABLED=true",
		"SPOOL_LISTEN="+addr, "SPOOL_QUEUE_URL="+queueURL, "SPOOL_TABLE=jobs",
		// Plaintext without authentication: this measures the row path's
		// memory; what TLS and tokens cost per call is BenchmarkAuth's.
		"SPOOL_INSECURE=true",
	)
	logPath := filepath.Join(b.TempDir(), "ingestor.log")
	logf, err := os.Create(logPath)
	require.NoError(b, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(b, cmd.Start())
	p := &process{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	b.Cleanup(func() { p.stop(b) })

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(b, err)
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	require.Eventually(b, func() bool {
		select {
		case <-p.done:
			return true // checked below
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 30*time.Second, 20*time.Millisecond)
	select {
	case <-p.done:
		b.Fatalf("ingestor exited at startup; log: %s", logPath)
	default:
	}
	return p
}

// stop ends the process with SIGTERM, as ECS does, and kills it if it
// does not stop in time.
func (p *process) stop(b testing.TB) {
	b.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		b.Errorf("ingestor did not stop on SIGTERM within 30s")
	}
}

// openStream opens a StreamFile call on the ingestor at addr, given at
// most d; done cancels the call and closes the connection.
func openStream(tb testing.TB, addr string, d time.Duration) (stream grpc.ClientStreamingClient[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse], done func()) {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	stream, err = spoolv1.NewIngestServiceClient(conn).StreamFile(ctx)
	if err != nil {
		cancel()
		conn.Close()
		require.NoError(tb, err)
	}
	return stream, func() {
		cancel()
		conn.Close()
	}
}

// streamRows sends rows of about 120 bytes in batches and returns the
// response.
func streamRows(b *testing.B, addr string, rows int) *spoolv1.StreamFileResponse {
	b.Helper()
	stream, done := openStream(b, addr, 30*time.Minute)
	defer done()
	require.NoError(b, stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: &spoolv1.FileHeader{
		FileName: fmt.Sprintf("bench-%d.csv", rows),
		Columns:  []string{"employee_id", "name", "iban", "amount", "currency", "reference"},
	}}}))
	for from := 1; from <= rows; from += rowsPerMessage {
		batch := &spoolv1.RowBatch{Rows: make([]*spoolv1.Row, 0, rowsPerMessage)}
		for n := from; n < from+rowsPerMessage && n <= rows; n++ {
			batch.Rows = append(batch.Rows, &spoolv1.Row{Fields: []string{
				fmt.Sprintf("E%08d", n),
				fmt.Sprintf("Employee Number %08d", n),
				fmt.Sprintf("DE8937040044%010d", n),
				fmt.Sprintf("%d.%02d", 1000+n%9000, n%100),
				"EUR",
				fmt.Sprintf("Payroll 2026-11 transfer reference %08d", n),
			}})
		}
		if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Rows{Rows: batch}}); err != nil {
			break // the server ended the call; CloseAndRecv says why
		}
	}
	resp, err := stream.CloseAndRecv()
	require.NoError(b, err)
	return resp
}

// peakRSS returns the process's peak resident set size (VmHWM) in KiB.
func peakRSS(b testing.TB, pid int) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(b, err)
			return kb
		}
	}
	require.NoError(b, s.Err())
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
