// Package grpcserve builds and runs the gRPC server both services share:
// one interceptor chain for unary and streaming calls, TLS and
// authentication (security.go), health checking, reflection when enabled
// (so grpcurl can list and call everything), and a bounded graceful
// shutdown.
package grpcserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Server is a gRPC server with health (and, when enabled, reflection)
// registered.
type Server struct {
	*grpc.Server
	Health *health.Server
	log    *slog.Logger
}

// New returns a server whose interceptor chain is, outermost first:
// logging → auth → recovery. Interceptors chained in opts come before
// these: metrics (metrics.Registry.ServerOptions) go there, so that a panic
// in any handler is still logged and counted, and so are refusals. Health
// and reflection stay exempt from logging (they are polled) and from auth
// (a load balancer's health check carries no credential; reflection only
// describes the API, and is off unless sec enables it). sec comes from
// SecurityFlags.Load; its transport credentials are added here.
func New(log *slog.Logger, sec Security, opts ...grpc.ServerOption) *Server {
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	api := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return !isInfrastructure(c.FullMethod()) })
	unary := []grpc.UnaryServerInterceptor{selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(slogAdapter(log), logOpts...), api)}
	stream := []grpc.StreamServerInterceptor{selector.StreamServerInterceptor(logging.StreamServerInterceptor(slogAdapter(log), logOpts...), api)}
	if sec.Auth != nil {
		unary = append(unary, selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(sec.Auth.Authenticate), api))
		stream = append(stream, selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(sec.Auth.Authenticate), api))
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recoverOpts...))
	stream = append(stream, recovery.StreamServerInterceptor(recoverOpts...))
	opts = append(opts, sec.ServerOptions()...)
	opts = append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	s := &Server{Server: grpc.NewServer(opts...), Health: health.NewServer(), log: log}
	healthpb.RegisterHealthServer(s.Server, s.Health)
	if sec.Reflection {
		reflection.Register(s.Server)
	}
	return s
}

// isInfrastructure reports whether a method belongs to health checking or
// reflection rather than to Spool's own API.
func isInfrastructure(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// Run serves on lis until ctx is done, then shuts down: health turns
// NOT_SERVING, in-flight calls get grace to finish, and whatever is still
// running after that is cut off. It returns nil after a shutdown caused by
// ctx.
func (s *Server) Run(ctx context.Context, lis net.Listener, grace time.Duration) error {
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.log.WarnContext(ctx, "graceful stop timed out; closing remaining calls", "grace", grace)
		s.Stop()
		<-done
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	}
	return nil
}
