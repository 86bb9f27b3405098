// Command probe is the container health check of Spool's images. The
// runtime images are distroless (no shell, no curl), and the services speak
// gRPC, so the check has to be a binary of its own: it asks a gRPC server
// for its health (grpc.health.v1, the service Spool's servers register) or
// GETs an HTTP URL, and exits 0 only when the answer is healthy.
//
//	probe -grpc 127.0.0.1:50051
//	probe -http http://127.0.0.1:8080/healthz
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "probe:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	grpcAddr := fs.String("grpc", "", "gRPC server address (host:port) to ask for grpc.health.v1 status")
	service := fs.String("service", "", "service name to check with -grpc; empty means the whole server")
	httpURL := fs.String("http", "", "URL to GET; any 2xx answer is healthy")
	timeout := fs.Duration("timeout", 3*time.Second, "how long the check may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	// A health check that hangs is reported by the container runtime as a
	// timeout without a reason; bounding it here keeps the reason.
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch {
	case (*grpcAddr == "") == (*httpURL == ""):
		return errors.New("give exactly one of -grpc or -http")
	case *grpcAddr != "":
		return checkGRPC(ctx, *grpcAddr, *service)
	default:
		return checkHTTP(ctx, *httpURL)
	}
}

func checkGRPC(ctx context.Context, addr, service string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("check health of %s: %w", addr, err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s is %s", addr, s)
	}
	return nil
}

func checkHTTP(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request for %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	// Draining lets the connection close cleanly; the body itself does not
	// matter.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	return nil
}
