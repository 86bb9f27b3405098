package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// seedLoop is the job Spool replaced, as its seed did it: read a row, POST
// it, wait for the answer, next; no queue, no ledger, no concurrency. It
// runs against sinkURL for d (or to the end of file) and returns rows/s.
// The rows go under a job of their own so they are not counted as Spool's.
func seedLoop(ctx context.Context, sinkURL, file string, d time.Duration) (float64, error) {
	rows, err := openRowFile(file)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	client := &http.Client{Timeout: 30 * time.Second}
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		row, b, err := rows.next("spool_job_id", "seed-loop", "spool_row")
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		n = row
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, sinkURL+"/", bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "seed-loop:"+strconv.Itoa(n))
		resp, err := client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("post row %d: %w", n, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return 0, fmt.Errorf("post row %d: %s", n, resp.Status)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
