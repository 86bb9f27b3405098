package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/sample"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/clientauth"
	"github.com/spoolhq/spool/platform/devpki"
)

// binDir holds the binaries under test: $SPOOL_BIN_DIR (set by make test),
// or a fresh build of every command.
var binDir string

func TestMain(m *testing.M) {
	code, err := func() (int, error) {
		binDir = os.Getenv("SPOOL_BIN_DIR")
		if binDir != "" {
			// The processes run in their own directories.
			abs, err := filepath.Abs(binDir)
			if err != nil {
				return 1, err
			}
			binDir = abs
		} else {
			dir, err := os.MkdirTemp("", "spool-e2e-bin-")
			if err != nil {
				return 1, err
			}
			defer os.RemoveAll(dir)
			cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
				"github.com/spoolhq/spool/ingestor/cmd/ingestor",
				"github.com/spoolhq/spool/dispatcher/cmd/dispatcher",
				"github.com/spoolhq/spool/sink/cmd/sink",
				"github.com/spoolhq/spool/cli/cmd/spool")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				return 1, fmt.Errorf("build binaries: %w", err)
			}
			binDir = dir
		}
		// Every process the tests start records its AWS calls here.
		logDir, err := os.MkdirTemp("", "spool-e2e-calls-")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(logDir)
		callLog := filepath.Join(logDir, "aws-calls.jsonl")
		if err := os.Setenv(awsconf.CallLogEnv, callLog); err != nil {
			return 1, err
		}
		// Every stack runs with TLS and authentication, as deployed; the
		// tests and the CLI call as an admin unless a test says otherwise.
		pkiDir, err := os.MkdirTemp("", "spool-e2e-pki-")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(pkiDir)
		if pki, err = devpki.New(pkiDir); err != nil {
			return 1, err
		}
		if adminToken, err = pki.Token("e2e-admin", []string{"admin"}, 24*time.Hour); err != nil {
			return 1, err
		}
		flag.Parse()
		code := m.Run()
		// The calls a failed test made were made all the same.
		unseen, err := checkAWSCalls(callLog)
		if full := code == 0 && flag.Lookup("test.run").Value.String() == ""; full && len(unseen) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: listed AWS calls no test made this run (timing decides some; remove one from %s only if the code no longer makes it):\n  %s\n",
				awsCallsFile, strings.Join(unseen, "\n  "))
		}
		if err != nil {
			return 1, err
		}
		return code, nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
	}
	os.Exit(code)
}

// The PKI every stack of the run uses, and a token with every permission.
var (
	pki        *devpki.PKI
	adminToken string
)

// startStack runs a whole stack for the test and stops it at cleanup,
// checking that every process exits cleanly on SIGTERM.
func startStack(t *testing.T, dispatchers int, extra func(*stack.Options)) *stack.Stack {
	t.Helper()
	o := stack.Options{StateDir: t.TempDir(), BinDir: binDir, Dispatchers: dispatchers, PKI: pki}
	if extra != nil {
		extra(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := stack.Up(ctx, o)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := s.Down(); err != nil {
			t.Errorf("stack down: %v", err)
		}
		if t.Failed() {
			dumpLogs(t, o.StateDir)
		}
	})
	return s
}

// dumpLogs prints the tail of every process log of a failed test, and
// keeps the whole logs under $SPOOL_E2E_LOG_DIR/<test> when it is set: the
// tails rarely say why a row went wrong.
func dumpLogs(t *testing.T, stateDir string) {
	t.Helper()
	keep := os.Getenv("SPOOL_E2E_LOG_DIR")
	if keep != "" {
		keep = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Logf("keep logs: %v", err)
			keep = ""
		}
	}
	logs, _ := filepath.Glob(filepath.Join(stateDir, "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if keep != "" {
			if err := os.WriteFile(filepath.Join(keep, filepath.Base(l)), b, 0o644); err != nil {
				t.Logf("keep %s: %v", filepath.Base(l), err)
			}
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		t.Logf("--- %s (last lines)\n%s", filepath.Base(l), strings.Join(lines, "\n"))
	}
}

// envOf returns the process environment plus the stack's endpoints, as a
// user gets it by sourcing .spool/stack.env.
func envOf(s *stack.Stack) []string {
	return append(append(os.Environ(), s.Env...), "SPOOL_TOKEN="+adminToken)
}

// writeSample writes a sample payroll file of rows rows.
func writeSample(t *testing.T, rows int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("payroll-%d.csv", rows))
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, sample.Write(f, rows, uint64(rows)))
	require.NoError(t, f.Close())
	return path
}

// getJSON decodes the JSON answer of a GET into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, url)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v), url)
}

// sinkRows returns, per row number, how many times the sink applied the
// transaction of job, and checks each carried the expected key.
func sinkRows(t *testing.T, s *stack.Stack, jobID string) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for r, tx := range sinkLedger(t, s, jobID) {
		require.Equal(t, jobID, tx.Job)
		require.NotEmpty(t, tx.Key, "row %d arrived without an idempotency key", r)
		got[r] = int(tx.Applied)
	}
	return got
}

// requireEachRowOnce checks that rows 1..n each reached the sink once.
func requireEachRowOnce(t *testing.T, s *stack.Stack, jobID string, n int64) {
	t.Helper()
	got := sinkRows(t, s, jobID)
	var missing, twice []int64
	for r := int64(1); r <= n; r++ {
		switch c := got[r]; {
		case c == 0:
			missing = append(missing, r)
		case c > 1:
			twice = append(twice, r)
		}
	}
	require.Empty(t, missing, "rows never delivered")
	require.Empty(t, twice, "rows delivered more than once")
	require.Len(t, got, int(n), "rows outside 1..%d delivered", n)
}

// dial connects to a service of the stack, as an admin.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	return dialAs(t, addr, adminToken)
}

// dialAs connects to a service of the stack with a bearer token (none when
// empty), trusting the stack's CA.
func dialAs(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, dialOptionsAs(t, token)...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dialOptionsAs are the options of a client that trusts the stack's CA
// and sends token (none when empty) with every call: the CLI's own
// (platform/clientauth), as SPOOL_CA_FILE and SPOOL_TOKEN set them.
func dialOptionsAs(t *testing.T, token string) []grpc.DialOption {
	t.Helper()
	opts, err := clientauth.Config{CAFile: pki.CAFile(), Token: token}.DialOptions()
	require.NoError(t, err)
	return opts
}

// watchToEnd follows WatchJob on addr and returns the final progress.
func watchToEnd(t *testing.T, addr, jobID string, timeout time.Duration) *spoolv1.JobProgress {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := spoolv1.NewDispatchServiceClient(dial(t, addr)).WatchJob(ctx, &spoolv1.WatchJobRequest{JobId: jobID})
	require.NoError(t, err)
	var last *spoolv1.JobProgress
	for {
		msg, err := stream.Recv()
		require.NoError(t, err, "watch ended before a final message (last: %v)", last)
		last = msg.GetProgress()
		if last.GetFinal() {
			return last
		}
	}
}

// runCLI runs bin/spool with the stack's environment.
func runCLI(t *testing.T, s *stack.Stack, args ...string) (string, error) {
	t.Helper()
	return runCLIAs(t, s, adminToken, args...)
}

// runCLIAs runs the CLI with token as SPOOL_TOKEN.
func runCLIAs(t *testing.T, s *stack.Stack, token string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "spool"), args...)
	// The last of two values of a variable is the one the process sees.
	cmd.Env = append(envOf(s), "SPOOL_TOKEN="+token)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// jobIDFrom finds the job id the CLI printed.
func jobIDFrom(t *testing.T, out string) string {
	t.Helper()
	for _, f := range strings.Fields(out) {
		f = strings.Trim(f, "(),:")
		if len(f) == 36 && strings.Count(f, "-") == 4 {
			return f
		}
	}
	t.Fatalf("no job id in output:\n%s", out)
	return ""
}
