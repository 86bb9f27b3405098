package metrics

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestStatusClass(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{
		{0, "error"}, {200, "2xx"}, {204, "2xx"}, {302, "3xx"}, {429, "4xx"}, {503, "5xx"}, {600, "error"}, {-1, "error"},
	} {
		require.Equal(t, tc.want, StatusClass(tc.status), "status %d", tc.status)
	}
}

func TestListenOffWhenEmpty(t *testing.T) {
	lis, err := Listen("")
	require.NoError(t, err)
	require.Nil(t, lis)
}

// TestServe scrapes a registry whose gRPC server is initialised, parses
// the page as Prometheus text, and checks that Serve stops with its
// context.
func TestServe(t *testing.T) {
	r := New()
	srv := grpc.NewServer(r.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	r.InitializeRPC(srv)

	lis, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, lis, time.Second, slog.New(slog.DiscardHandler)) }()

	resp, err := http.Get("http://" + lis.Addr().String() + Path)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	require.Contains(t, families, "go_goroutines")
	started := families["grpc_server_started_total"]
	require.NotNil(t, started, "RPC metrics are created at zero for every method")
	var methods []string
	for _, m := range started.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "grpc_method" {
				methods = append(methods, l.GetValue())
			}
		}
	}
	require.Contains(t, methods, "Check")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	_, err = net.DialTimeout("tcp", lis.Addr().String(), time.Second)
	require.Error(t, err, "the listener is closed")
}
