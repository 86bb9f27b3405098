// Package emulator starts the local AWS emulators that Spool's stack and
// tests run on: local-aws-sqs (SQS), and for DynamoDB either dynalite or
// AWS's own DynamoDB Local, all installed from the npm registry into the
// repository's local/ folder.
//
// dynalite is the default: it starts in a fraction of a second. DynamoDB
// Local (SPOOL_DYNAMODB_EMULATOR=dynamodb-local) is the reference: it is
// AWS's code, with transactions and time to live, but a Java program that
// takes seconds to start. make test runs the DynamoDB tests on both, so
// nothing comes to depend on one emulator's gaps or quirks.
//
// The services never know they talk to an emulator: they get the endpoint
// through the standard AWS_ENDPOINT_URL_* variables, as on AWS.
package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// Kind names an emulator.
type Kind string

// The emulators.
const (
	SQS      Kind = "sqs"
	DynamoDB Kind = "dynamodb"
)

// EnvEndpoint is the standard AWS variable that points the SDK at kind.
func (k Kind) EnvEndpoint() string {
	if k == SQS {
		return "AWS_ENDPOINT_URL_SQS"
	}
	return "AWS_ENDPOINT_URL_DYNAMODB"
}

// LocalDirEnv overrides where local/ (package.json and node_modules) is.
const LocalDirEnv = "SPOOL_LOCAL_DIR"

// FindLocalDir returns the local/ folder: $SPOOL_LOCAL_DIR, or the nearest
// local/ with a package.json above the working directory. It says how to
// install the emulators when they are missing.
func FindLocalDir() (string, error) {
	dir := os.Getenv(LocalDirEnv)
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("find local/: %w", err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "local", "package.json")); err == nil {
				dir = filepath.Join(d, "local")
				break
			}
			if filepath.Dir(d) == d {
				return "", fmt.Errorf("find local/: no local/package.json above %s; set %s", wd, LocalDirEnv)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "dynalite")); err != nil {
		return "", errNotInstalled(dir)
	}
	return dir, nil
}

func errNotInstalled(dir string) error {
	return fmt.Errorf("emulators not installed in %s: run `make deps` (npm ci in local/)", dir)
}

// Command returns the command that runs kind on port of the loopback
// interface; for DynamoDB, the emulator ChosenDynamoDB names.
func Command(kind Kind, localDir string, port int) (*exec.Cmd, error) {
	p := strconv.Itoa(port)
	var cmd *exec.Cmd
	switch kind {
	case SQS:
		cmd = exec.Command("node", "sqs.mjs", "--port", p, "--host", "127.0.0.1")
	case DynamoDB:
		impl, err := ChosenDynamoDB()
		if err != nil {
			return nil, err
		}
		if impl == DynamoDBLocal {
			return DynamoDBLocalCommand(localDir, port, true)
		}
		// dynamodb.mjs runs dynalite in memory and survives clients killed
		// mid-request (see the comment there).
		cmd = exec.Command("node", "dynamodb.mjs", "--port", p, "--host", "127.0.0.1")
	default:
		return nil, fmt.Errorf("unknown emulator %q", kind)
	}
	cmd.Dir = localDir
	return cmd, nil
}

// Endpoint is the URL of an emulator on port.
func Endpoint(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitReady polls endpoint until it answers HTTP, or ctx ends. Any HTTP
// answer counts: every emulator answers a bare POST with an AWS error.
func WaitReady(ctx context.Context, endpoint string) error {
	c := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", endpoint, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
