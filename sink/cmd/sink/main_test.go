package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string
	}{
		{
			name: "defaults",
			want: config{listen: ":8080", idempotencyHeader: "Idempotency-Key", logLevel: slog.LevelInfo, hangFor: 30 * time.Second, oauthTokenTTL: time.Minute},
		},
		{
			name: "environment fills flags",
			env: map[string]string{"SPOOL_LISTEN": "127.0.0.1:9", "SPOOL_FAIL_RATE": "0.25", "SPOOL_LATENCY": "5ms",
				"SPOOL_LATENCY_JITTER": "2ms", "SPOOL_SEED": "7", "SPOOL_IDEMPOTENCY_HEADER": "X-Key", "SPOOL_LOG_LEVEL": "debug",
				"SPOOL_HANG_RATE": "0.03", "SPOOL_HANG_FOR": "3s", "SPOOL_RESET_RATE": "0.01", "SPOOL_HONOUR_KEY": "true"},
			want: config{listen: "127.0.0.1:9", failRate: 0.25, latency: 5 * time.Millisecond, jitter: 2 * time.Millisecond,
				seed: 7, idempotencyHeader: "X-Key", logLevel: slog.LevelDebug,
				hangRate: 0.03, hangFor: 3 * time.Second, resetRate: 0.01, honourKey: true, oauthTokenTTL: time.Minute},
		},
		{
			name: "flags win",
			args: []string{"-listen", ":1", "-fail-rate", "1"},
			env:  map[string]string{"SPOOL_LISTEN": ":2"},
			want: config{listen: ":1", failRate: 1, idempotencyHeader: "Idempotency-Key", logLevel: slog.LevelInfo, hangFor: 30 * time.Second, oauthTokenTTL: time.Minute},
		},
		{name: "fail rate above one", args: []string{"-fail-rate", "1.5"}, wantErr: "-fail-rate"},
		{name: "negative hang rate", args: []string{"-hang-rate", "-0.1"}, wantErr: "-hang-rate"},
		{name: "reset rate above one", args: []string{"-reset-rate", "2"}, wantErr: "-reset-rate"},
		{name: "hang and reset above one together", args: []string{"-hang-rate", "0.6", "-reset-rate", "0.5"}, wantErr: "add up to more than 1"},
		{name: "negative latency", args: []string{"-latency", "-1s"}, wantErr: "negative"},
		{name: "negative hang", args: []string{"-hang-for", "-1s"}, wantErr: "negative"},
		{name: "bad level", env: map[string]string{"SPOOL_LOG_LEVEL": "loud"}, wantErr: "SPOOL_LOG_LEVEL"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "HTTPS without a certificate", args: []string{"-https-listen", ":0"}, wantErr: "-https-listen needs"},
		{name: "client CA without HTTPS", args: []string{"-https-client-ca-file", "ca.pem"}, wantErr: "-https-listen needs"},
		{name: "OAuth2 client without secret", args: []string{"-oauth2-client-id", "spool"}, wantErr: "go together"},
		{name: "malformed signing secret", env: map[string]string{"SPOOL_SIGNING_SECRETS": "whsec_ok== whsec_*bad*"}, wantErr: "signing secret 2: want whsec_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.args, io.Discard, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// startSink runs the sink with args on a free loopback port until stop, or
// the test's end, and returns its URL; stop returns run's error.
func startSink(t *testing.T, args ...string) (url string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	outR, outW := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), outW, io.Discard)
		outW.Close()
	}()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-errc
	})
	t.Cleanup(func() { _ = stop() })
	line, err := bufio.NewReader(outR).ReadString('\n')
	require.NoError(t, err)
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "sink listening on ")
	require.True(t, ok, "first line: %q", line)
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	return url, stop
}

// stats reads the sink's /stats.
func stats(url string) (map[string]any, error) {
	resp, err := http.Get(url + "/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s map[string]any
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

func TestRunServesUntilCancelled(t *testing.T) {
	url, stop := startSink(t, "-seed", "3")

	resp, err := http.Post(url+"/", "application/json", strings.NewReader(`{"spool_job_id":"j","spool_row":1}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	got, err := stats(url)
	require.NoError(t, err)
	require.Equal(t, 1.0, got["distinct"])

	require.NoError(t, stop())
}

// TestShutdownAbortsAHeldAnswer checks that a request held on purpose does
// not keep the sink alive for the whole shutdown grace.
func TestShutdownAbortsAHeldAnswer(t *testing.T) {
	url, stop := startSink(t, "-hang-rate", "1", "-hang-for", "1h")

	posted := make(chan error, 1)
	go func() {
		resp, err := http.Post(url+"/", "application/json", strings.NewReader(`{"spool_job_id":"j","spool_row":1}`))
		if err == nil {
			resp.Body.Close()
		}
		posted <- err
	}()
	require.Eventually(t, func() bool {
		got, err := stats(url)
		return err == nil && got["hung"] == 1.0
	}, 5*time.Second, 10*time.Millisecond)

	start := time.Now()
	require.NoError(t, stop())
	require.Less(t, time.Since(start), shutdownGrace, "the held request kept the sink up for the whole grace")
	require.Error(t, <-posted, "a held request must be aborted, not answered")
}
