// Package metrics is what both services share to be watched by
// Prometheus: a registry with the Go runtime and process collectors, the
// gRPC server's RPC metrics (go-grpc-middleware's prometheus provider, the
// outermost interceptor of the chain), and the HTTP listener that serves
// the registry as a metrics page.
//
// The listener is separate from the gRPC port so that it can be left off
// (an empty address), firewalled apart, or scraped by a sidecar; it shuts
// down with the service.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
)

// Path is where the metrics page is served.
const Path = "/metrics"

// Registry is one process's metrics: its own registry (never the global
// one, so tests can build several) and the RPC metrics of its gRPC server.
type Registry struct {
	*prometheus.Registry
	rpc *grpcprom.ServerMetrics
}

// New returns a registry holding the Go runtime, process and RPC metrics.
func New() *Registry {
	r := &Registry{
		Registry: prometheus.NewRegistry(),
		rpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.005, .01, .05, .1, .5, 1, 5, 30, 120, 600}),
		)),
	}
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), r.rpc)
	return r
}

// ServerOptions are the gRPC server options that count and time every
// call. Pass them first to grpcserve.New: interceptors chained first are
// outermost, so a call that panics or is refused further in is still
// counted.
func (r *Registry) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(r.rpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(r.rpc.StreamServerInterceptor()),
	}
}

// InitializeRPC creates the RPC series of every method s serves at zero,
// so that a method never called yet is a 0, not a gap. Call it after the
// services are registered.
func (r *Registry) InitializeRPC(s *grpc.Server) {
	r.rpc.InitializeMetrics(s)
}

// Handler serves the registry in the Prometheus text (or OpenMetrics)
// format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{Registry: r.Registry})
}

// Serve serves the metrics page on lis until ctx is done, then closes the
// listener, waits up to grace for scrapes under way, and returns nil.
func (r *Registry) Serve(ctx context.Context, lis net.Listener, grace time.Duration, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle(Path, r.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.WarnContext(ctx, "metrics listener did not stop in time; closed", "error", err)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics on %s: %w", lis.Addr(), err)
	}
	return nil
}

// Listen opens the metrics listener, or returns nil when addr is empty
// (metrics off).
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	return lis, nil
}

// StatusClass names an HTTP status by its class ("2xx" … "5xx"), or
// "error" when there was no answer (status 0): bounded label values for
// request metrics.
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return "error"
	}
	return fmt.Sprintf("%dxx", status/100)
}
