package emutest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator"
)

// DynamoDB Local is a JVM: seconds to start where dynalite takes a fraction
// of one, and the tests start a fresh emulator for nearly every test. So a
// test binary starts DynamoDB Local once, without -sharedDb, where it keeps
// one database per access key, and every Start gets a loopback proxy of its
// own that puts its own access key in each request's Authorization header.
// A test thus sees an empty emulator whatever credentials its clients use,
// as with a process of its own. DynamoDB Local reads the key but checks no
// signature, so the rewritten requests are accepted as they are.
var dynamoDBLocal struct {
	once     sync.Once
	endpoint *url.URL
	err      error
	// keys numbers the access keys handed out.
	keys atomic.Int64
}

// startDynamoDBLocal returns the endpoint of a fresh database on the test
// binary's DynamoDB Local, started on first use. The process lives as long
// as the test binary: the kernel ends it when the binary exits.
func startDynamoDBLocal(tb testing.TB) string {
	tb.Helper()
	dynamoDBLocal.once.Do(func() {
		dynamoDBLocal.endpoint, dynamoDBLocal.err = runDynamoDBLocal()
	})
	require.NoError(tb, dynamoDBLocal.err)
	// Letters and digits only: DynamoDB Local refuses other access keys.
	key := "spool" + strconv.FormatInt(dynamoDBLocal.keys.Add(1), 10)
	target := dynamoDBLocal.endpoint
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Header.Set("Authorization", withAccessKey(r.In.Header.Get("Authorization"), key))
		},
		// A client killed mid-request (the dispatcher tests do that) is
		// no news.
		ErrorLog: log.New(io.Discard, "", 0),
	})
	tb.Cleanup(proxy.Close)
	return proxy.URL
}

// withAccessKey replaces the access key in a SigV4 Authorization header
// ("AWS4-HMAC-SHA256 Credential=KEY/date/region/service/aws4_request, ...").
func withAccessKey(auth, key string) string {
	const field = "Credential="
	i := strings.Index(auth, field)
	if i < 0 {
		return auth
	}
	start := i + len(field)
	end := strings.IndexByte(auth[start:], '/')
	if end < 0 {
		return auth
	}
	return auth[:start] + key + auth[start+end:]
}

// runDynamoDBLocal starts DynamoDB Local on a free port and waits until it
// answers. Its output goes to a temporary file, kept and named only when
// it does not start.
func runDynamoDBLocal() (*url.URL, error) {
	dir, err := emulator.FindLocalDir()
	if err != nil {
		return nil, err
	}
	port, err := emulator.FreePort()
	if err != nil {
		return nil, err
	}
	cmd, err := emulator.DynamoDBLocalCommand(dir, port, false)
	if err != nil {
		return nil, err
	}
	logf, err := os.CreateTemp("", "spool-dynamodb-local-*.log")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start DynamoDB Local: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	endpoint := emulator.Endpoint(port)
	if err := emulator.WaitReady(ctx, endpoint); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("DynamoDB Local (log: %s): %w", logf.Name(), err)
	}
	_ = os.Remove(logf.Name())
	return url.Parse(endpoint)
}
