package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startHealthServer serves grpc.health.v1 on a free loopback port with the
// whole server in the given status and "spool.v1.IngestService" SERVING,
// and stops it at cleanup.
func startHealthServer(tb testing.TB, status healthpb.HealthCheckResponse_ServingStatus) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	srv := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", status)
	h.SetServingStatus("spool.v1.IngestService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, h)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	tb.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	addr := lis.Addr().String()
	require.NoError(tb, lis.Close())
	return addr
}

func startHTTP(tb testing.TB, code int) string {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
	tb.Cleanup(srv.Close)
	return srv.URL
}

func TestRun(t *testing.T) {
	serving := startHealthServer(t, healthpb.HealthCheckResponse_SERVING)
	notServing := startHealthServer(t, healthpb.HealthCheckResponse_NOT_SERVING)
	nobody := closedAddr(t)
	ok := startHTTP(t, http.StatusOK)
	unavailable := startHTTP(t, http.StatusServiceUnavailable)

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "grpc serving", args: []string{"-grpc", serving}},
		{name: "grpc named service serving", args: []string{"-grpc", notServing, "-service", "spool.v1.IngestService"}},
		{name: "grpc not serving", args: []string{"-grpc", notServing}, wantErr: "NOT_SERVING"},
		{name: "grpc unknown service", args: []string{"-grpc", serving, "-service", "nope"}, wantErr: "NotFound"},
		{name: "grpc nothing listening", args: []string{"-grpc", nobody, "-timeout", "2s"}, wantErr: "check health of " + nobody},
		{name: "http ok", args: []string{"-http", ok + "/healthz"}},
		{name: "http unavailable", args: []string{"-http", unavailable + "/healthz"}, wantErr: "503"},
		{name: "http nothing listening", args: []string{"-http", "http://" + nobody + "/healthz"}, wantErr: "get http://" + nobody},
		{name: "no target", args: nil, wantErr: "exactly one"},
		{name: "two targets", args: []string{"-grpc", serving, "-http", ok}, wantErr: "exactly one"},
		{name: "stray argument", args: []string{"-grpc", serving, "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}
