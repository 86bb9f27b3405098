// Package emutest starts emulators for tests and stops them at cleanup.
package emutest

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/smithy-go/middleware"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/awsconf"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/provision"
)

// Start runs kind on a free loopback port for the rest of the test and
// returns its endpoint; for DynamoDB, the emulator SPOOL_DYNAMODB_EMULATOR
// names (emulator.ChosenDynamoDB). The emulator's output goes to a file in
// the test's temporary folder, named in the failure message when it does
// not start. Under -short (make test-unit) the test is skipped instead: the
// inner loop runs what needs no emulator, and make test runs everything.
func Start(tb testing.TB, kind emulator.Kind) string {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("starts %s: skipped under -short", kind)
	}
	if kind == emulator.DynamoDB {
		impl, err := emulator.ChosenDynamoDB()
		require.NoError(tb, err)
		if impl == emulator.DynamoDBLocal {
			return startDynamoDBLocal(tb)
		}
	}
	dir, err := emulator.FindLocalDir()
	require.NoError(tb, err)
	port, err := emulator.FreePort()
	require.NoError(tb, err)
	cmd, err := emulator.Command(kind, dir, port)
	require.NoError(tb, err)
	logPath := filepath.Join(tb.TempDir(), string(kind)+".log")
	logf, err := os.Create(logPath)
	require.NoError(tb, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed by its timeout runs no cleanup: the kernel then
	// ends the emulator (a JVM holds some 200 MB) instead of orphaning it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(tb, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := emulator.Endpoint(port)
	require.NoError(tb, emulator.WaitReady(ctx, endpoint), "emulator log: %s", logPath)
	return endpoint
}

// Config returns an AWS config whose kind endpoint is endpoint, with static
// credentials and the API options of awsconf.Load, as the services would
// build from the environment.
func Config(endpoint string) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("local", "local", ""),
		BaseEndpoint: aws.String(endpoint),
		APIOptions:   []func(*middleware.Stack) error{awsconf.CRC32WhenPresent},
	}
}

// Table starts a fresh DynamoDB emulator, creates in it the Spool table
// name (provision.EnsureTable: the layout the services use) and returns a
// client of it.
func Table(tb testing.TB, name string) *dynamodb.Client {
	tb.Helper()
	db := dynamodb.NewFromConfig(Config(Start(tb, emulator.DynamoDB)))
	require.NoError(tb, provision.EnsureTable(context.Background(), db, name), "create table %s", name)
	return db
}
