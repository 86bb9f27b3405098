package scenario

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
)

// rowsPerBatch is how many rows one RowBatch message carries: about the
// bytes of the CLI's 64 KiB chunk, so the two ways of streaming a file
// differ in what the ingestor parses, not in how many messages it reads.
const rowsPerBatch = 500

// sendRowBatches streams file to s's ingestor as a client that already
// split its rows would: a FileHeader naming the columns, then RowBatch
// messages, none of the raw CSV. It returns once the ingestor has taken
// every row (as spool send -no-watch does), and the rows it took.
func sendRowBatches(ctx context.Context, s *stack.Stack, file string) (int64, error) {
	addr := envOf(s, "SPOOL_INGESTOR_ADDR")
	if addr == "" {
		return 0, errors.New("the stack has no SPOOL_INGESTOR_ADDR")
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, fmt.Errorf("dial ingestor: %w", err)
	}
	defer cc.Close()
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	columns, err := r.Read()
	if err != nil {
		return 0, fmt.Errorf("read header: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	// Cancelling on an early return tells the ingestor the file is
	// incomplete.
	defer cancel()
	stream, err := spoolv1.NewIngestServiceClient(cc).StreamFile(ctx)
	if err != nil {
		return 0, fmt.Errorf("open stream: %w", err)
	}
	header := &spoolv1.FileHeader{FileName: "rows-" + filepath.Base(file), Columns: columns}
	if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: header}}); err != nil {
		return 0, fmt.Errorf("send header: %w", err)
	}
	sent := int64(0)
	for n := 1; ; n++ {
		batch := &spoolv1.RowBatch{Rows: make([]*spoolv1.Row, 0, rowsPerBatch)}
		var rerr error
		for len(batch.Rows) < rowsPerBatch {
			var rec []string
			if rec, rerr = r.Read(); rerr != nil {
				break
			}
			batch.Rows = append(batch.Rows, &spoolv1.Row{Fields: rec})
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return 0, fmt.Errorf("read row %d: %w", sent+int64(len(batch.Rows))+1, rerr)
		}
		if len(batch.Rows) > 0 {
			if err := stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Rows{Rows: batch}}); err != nil {
				// The ingestor ended the stream; its answer says why.
				_, cerr := stream.CloseAndRecv()
				return 0, fmt.Errorf("send row batch %d: %w", n, errors.Join(err, cerr))
			}
			sent += int64(len(batch.Rows))
		}
		if rerr != nil {
			break
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return 0, fmt.Errorf("finish stream after %d rows: %w", sent, err)
	}
	if st := resp.GetJob().GetState(); resp.GetExisting() || st == spoolv1.JobState_JOB_STATE_REJECTED || st == spoolv1.JobState_JOB_STATE_ABORTED {
		return 0, fmt.Errorf("row batches: job %s ended %s (existing %t)", resp.GetJobId(), st, resp.GetExisting())
	}
	if resp.GetRowsPublished() != sent {
		return 0, fmt.Errorf("row batches: %d rows sent, %d published", sent, resp.GetRowsPublished())
	}
	return sent, nil
}

// envOf returns the value s's environment gives key, or "".
func envOf(s *stack.Stack, key string) string {
	for _, kv := range s.Env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}
