// Package scenario runs the benchmark's measurements against Spool's real
// processes (local/stack: the emulators, the sink, an ingestor, N
// dispatchers on loopback) and against the baselines a user could write
// instead, on the same emulators in the same run.
package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spoolhq/spool/local/sample"
	"github.com/spoolhq/spool/local/stack"
)

// Env is what every scenario needs.
type Env struct {
	// BinDir holds the built binaries (make build's bin/).
	BinDir string
	// WorkDir receives stacks' state and sample files.
	WorkDir string
	// Log receives progress lines.
	Log io.Writer
}

// up starts a stack with dispatchers dispatchers and the given extra
// arguments, its services reaching the emulators through calls when it is
// not nil; the caller stops it with Down.
func (e Env) up(ctx context.Context, name string, dispatchers int, dispatcherArgs, sinkArgs []string, calls *callCounter) (*stack.Stack, error) {
	dir, err := os.MkdirTemp(e.WorkDir, name+"-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	o := stack.Options{
		StateDir: dir, BinDir: e.BinDir, Dispatchers: dispatchers,
		DispatcherArgs: dispatcherArgs, SinkArgs: sinkArgs,
	}
	if calls != nil {
		o.AWSEndpoint = calls.endpoint
	}
	s, err := stack.Up(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("start stack %s: %w", name, err)
	}
	return s, nil
}

// sampleFile writes a sample payroll file of rows rows (deterministic).
func (e Env) sampleFile(rows int) (string, error) { return e.sampleFileSeed(rows, uint64(rows)) }

// sampleFileSeed writes a sample payroll file of rows rows drawn from
// seed: files of other seeds have other contents, so the ingestor takes
// each as a new file rather than as one it already accepted.
func (e Env) sampleFileSeed(rows int, seed uint64) (string, error) {
	path := filepath.Join(e.WorkDir, fmt.Sprintf("payroll-%d-%d.csv", rows, seed))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := sample.Write(f, rows, seed); err != nil {
		f.Close()
		return "", fmt.Errorf("write sample: %w", err)
	}
	return path, f.Close()
}

// send runs `spool send -no-watch file` against s and returns the job's
// ID once the ingestor has taken the whole file.
func (e Env) send(ctx context.Context, s *stack.Stack, file string) (string, error) {
	id, _, err := e.sendCPU(ctx, s, file)
	return id, err
}

// sendCPU is send, also returning the CPU time the CLI used.
func (e Env) sendCPU(ctx context.Context, s *stack.Stack, file string) (string, time.Duration, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "spool"), "send", "-no-watch", file)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Dir = e.WorkDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", 0, fmt.Errorf("spool send: %w\n%s", err, out)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	for _, f := range strings.Fields(string(out)) {
		f = strings.Trim(f, "(),:")
		if len(f) == 36 && strings.Count(f, "-") == 4 {
			return f, cpu, nil
		}
	}
	return "", 0, fmt.Errorf("no job id in the output of spool send:\n%s", out)
}

// sinkStats is the part of the sink's /stats answer read here.
type sinkStats struct {
	Distinct int64 `json:"distinct"`
	Failed   int64 `json:"failed"`
}

func getSinkStats(ctx context.Context, sinkURL, job string) (sinkStats, error) {
	var st sinkStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sinkURL+"/stats?job="+job, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("sink stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("sink stats: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// progress is the number of distinct rows the sink holds, over time.
type progress struct {
	at   []time.Duration
	rows []int64
}

// waitDelivered polls the sink until it holds rows distinct rows of job, or
// timeout passes, and returns what it saw. seen, when not nil, is told
// every count as it comes.
func waitDelivered(ctx context.Context, sinkURL, job string, rows int64, timeout time.Duration, seen func(int64)) (progress, error) {
	var p progress
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := getSinkStats(ctx, sinkURL, job)
		if err != nil {
			return p, err
		}
		p.at = append(p.at, time.Since(start))
		p.rows = append(p.rows, st.Distinct)
		if seen != nil {
			seen(st.Distinct)
		}
		if st.Distinct >= rows {
			return p, nil
		}
		if time.Since(start) > timeout {
			return p, fmt.Errorf("job %s: %d of %d rows at the sink after %s", job, st.Distinct, rows, timeout)
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-tick.C:
		}
	}
}

// steadyRate is the delivery rate between the moments the sink held 10 %
// and 90 % of total rows: the speed of the bulk of a job, without the
// ramp up and the tail, which a longer file would make ever smaller.
func (p progress) steadyRate(total int64) float64 {
	from, to := -1, -1
	for i, n := range p.rows {
		if from < 0 && n >= total/10 {
			from = i
		}
		if to < 0 && n >= total*9/10 {
			to = i
		}
	}
	if from < 0 || to <= from {
		return 0
	}
	return float64(p.rows[to]-p.rows[from]) / (p.at[to] - p.at[from]).Seconds()
}
