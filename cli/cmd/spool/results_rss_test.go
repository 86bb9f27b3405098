package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// syntheticReport is a dispatcher whose ReportJob streams rows ledger
// entries made up on the fly, as a real one streams its ledger, with the
// summary that matches them.
type syntheticReport struct {
	spoolv1.UnimplementedDispatchServiceServer
	rows int64
}

func (s *syntheticReport) ReportJob(req *spoolv1.ReportJobRequest, stream grpc.ServerStreamingServer[spoolv1.ReportJobResponse]) error {
	delivered := spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED
	e := &spoolv1.LedgerEntry{JobId: req.GetJobId(), State: delivered, Attempts: 1, LastStatus: 200}
	msg := &spoolv1.ReportJobResponse{Msg: &spoolv1.ReportJobResponse_Entry{Entry: e}}
	for row := int64(1); row <= s.rows; row++ {
		e.Row = row
		e.TransactionKey = fmt.Sprintf("bk:%064x", row)
		e.BusinessKey = fmt.Sprintf("E%07d|2026-11", row)
		e.Amount = "1234.56"
		e.Reference = fmt.Sprintf("pay_%012d", row)
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	// Each row's amount is 1234.56, so the sum is rows × 123456 cents.
	sum := fmt.Sprintf("%d.%02d", s.rows*123456/100, s.rows*123456%100)
	return stream.Send(&spoolv1.ReportJobResponse{Msg: &spoolv1.ReportJobResponse_Summary{Summary: &spoolv1.ReportSummary{
		Job:    &spoolv1.Job{JobId: req.GetJobId(), State: spoolv1.JobState_JOB_STATE_COMPLETED, Total: s.rows},
		Totals: []*spoolv1.StateTotal{{State: delivered, Rows: s.rows, AmountSum: sum}},
	}}})
}

// BenchmarkResultsPeakRSS measures the peak resident memory of the spool
// CLI (a real process, built from this package) writing the CSV results of
// 1 000 000 ledger rows, against 10 000 rows in the same run: a fake
// dispatcher streams the rows over loopback gRPC, so the CLI does all the
// work it does against a real one. Memory is flat in rows when the ratio
// stays near 1.
//
//	go test -run '^$' -bench ResultsPeakRSS -benchtime 1x ./cmd/spool/
func BenchmarkResultsPeakRSS(b *testing.B) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "spool")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(b, build.Run())

	peak := func(rows int64) float64 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		srv := grpc.NewServer()
		spoolv1.RegisterDispatchServiceServer(srv, &syntheticReport{rows: rows})
		go func() { _ = srv.Serve(lis) }()
		defer srv.Stop()

		out := filepath.Join(dir, fmt.Sprintf("results-%d.csv", rows))
		cmd := exec.Command(bin, "results", "-dispatcher-addrs", lis.Addr().String(), "-o", out, "job-rss")
		cmd.Env = append(os.Environ(), "SPOOL_DISPATCHER_ADDRS=")
		cmd.Dir = dir // no .spool/stack.env here
		msg, err := cmd.CombinedOutput()
		require.NoError(b, err, "%s", msg)
		st, err := os.Stat(out)
		require.NoError(b, err)
		require.Greater(b, st.Size(), rows*60, "every row written")
		ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		require.True(b, ok)
		return float64(ru.Maxrss) / 1024 // Linux reports KiB
	}

	for b.Loop() {
		base := peak(10_000)
		big := peak(1_000_000)
		b.ReportMetric(base, "MB-peak-10k-rows")
		b.ReportMetric(big, "MB-peak-1M-rows")
		b.ReportMetric(big/base, "ratio")
	}
}
