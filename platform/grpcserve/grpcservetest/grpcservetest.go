// Package grpcservetest serves a grpcserve.Server in process over bufconn,
// so a handler test goes through the real interceptor chain without a
// port.
package grpcservetest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/spoolhq/spool/platform/grpcserve"
)

// Dial runs srv until ctx is done or the test ends, and returns a client
// connection to it; opts are added to the dial's. The test's cleanup
// closes the connection, stops srv and requires that it stopped cleanly.
func Dial(tb testing.TB, ctx context.Context, srv *grpcserve.Server, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis, 5*time.Second) }()
	opts = append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)
	conn, err := grpc.NewClient("passthrough:///bufconn", opts...)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		conn.Close()
		cancel()
		require.NoError(tb, <-done)
	})
	return conn
}
