package grpcserve

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/platform/envcfg"
)

func TestLimitsFlags(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    func(*Limits)
		wantErr string
	}{
		{name: "defaults", want: func(*Limits) {}},
		{
			name: "environment",
			env: map[string]string{
				"SPOOL_GRPC_MAX_CONCURRENT_STREAMS": "7", "SPOOL_GRPC_KEEPALIVE_MIN_TIME": "5s",
				"SPOOL_GRPC_KEEPALIVE_PERMIT_WITHOUT_STREAM": "true", "SPOOL_GRPC_MAX_CONNECTION_AGE": "0",
			},
			want: func(l *Limits) {
				l.MaxConcurrentStreams, l.KeepaliveMinTime, l.PermitWithoutStream, l.MaxConnectionAge = 7, 5*time.Second, true, 0
			},
		},
		{name: "zero streams", env: map[string]string{"SPOOL_GRPC_MAX_CONCURRENT_STREAMS": "0"}, wantErr: "-grpc-max-concurrent-streams 0"},
		{name: "zero ping interval", env: map[string]string{"SPOOL_GRPC_KEEPALIVE_MIN_TIME": "0s"}, wantErr: "-grpc-keepalive-min-time must be positive"},
		{name: "negative age", env: map[string]string{"SPOOL_GRPC_MAX_CONNECTION_AGE_GRACE": "-1s"}, wantErr: "-grpc-max-connection-age-grace must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			l.RegisterFlags(fs)
			require.NoError(t, envcfg.Parse(fs, nil, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }))
			err := l.Validate()
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			want := DefaultLimits()
			tt.want(&want)
			require.Equal(t, want, l)
		})
	}
}

// serve starts a server with limits on a loopback port and returns a
// client connection to it.
func serve(t *testing.T, l Limits) *grpc.ClientConn {
	t.Helper()
	require.NoError(t, l.Validate())
	s := New(slog.New(slog.DiscardHandler), Security{}, l.ServerOptions()...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, lis, time.Second) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		require.NoError(t, <-done)
	})
	return conn
}

func TestLimitsEnforced(t *testing.T) {
	tests := []struct {
		name   string
		limits func(*Limits)
		// check runs with one health Watch stream open on conn.
		check func(t *testing.T, conn *grpc.ClientConn, watch healthpb.Health_WatchClient)
	}{
		{
			name:   "a call past the concurrent streams waits for a slot",
			limits: func(l *Limits) { l.MaxConcurrentStreams = 1 },
			check: func(t *testing.T, conn *grpc.ClientConn, _ healthpb.Health_WatchClient) {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
				require.Equal(t, codes.DeadlineExceeded, status.Code(err), "the only stream is taken: %v", err)
			},
		},
		{
			name:   "a call within the concurrent streams runs",
			limits: func(l *Limits) { l.MaxConcurrentStreams = 2 },
			check: func(t *testing.T, conn *grpc.ClientConn, _ healthpb.Health_WatchClient) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
				require.NoError(t, err)
			},
		},
		{
			name: "a connection past its age is closed after the grace",
			limits: func(l *Limits) {
				l.MaxConnectionAge, l.MaxConnectionAgeGrace = 50*time.Millisecond, 50*time.Millisecond
			},
			check: func(t *testing.T, _ *grpc.ClientConn, watch healthpb.Health_WatchClient) {
				for {
					_, err := watch.Recv()
					if err == nil {
						continue
					}
					require.NotErrorIs(t, err, io.EOF)
					require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
					return
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.limits(&l)
			conn := serve(t, l)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
			require.NoError(t, err)
			_, err = watch.Recv() // the stream is open on the server
			require.NoError(t, err)
			tt.check(t, conn, watch)
		})
	}
}
