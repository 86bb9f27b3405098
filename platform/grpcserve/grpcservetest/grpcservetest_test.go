package grpcservetest_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/grpcserve/grpcservetest"
)

func TestDialReachesTheServer(t *testing.T) {
	srv := grpcserve.New(slog.New(slog.DiscardHandler), grpcserve.Security{})
	conn := grpcservetest.Dial(t, context.Background(), srv)
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
}
