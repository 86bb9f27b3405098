// Command probe is the container health check of Spool's images. The
// runtime images are distroless (no shell, no curl), and the services speak
// gRPC, so the check has to be a binary of its own: it asks a gRPC server
// for its health (grpc.health.v1, the service Spool's servers register) or
// GETs an HTTP URL, and exits 0 only when the answer is healthy.
//
//	probe -grpc 127.0.0.1:50051
//	probe -http http://127.0.0.1:8080/healthz
//
// A server that serves TLS is checked over TLS. Run inside the server's own
// container, where SPOOL_TLS_CERT_FILE names the certificate the server
// presents, the probe trusts exactly that certificate, whatever names it
// carries (on ECS they are the service's, not 127.0.0.1). Elsewhere it
// dials as every Spool client does (platform/clientauth: SPOOL_CA_FILE,
// SPOOL_TOKEN, a client certificate), and plaintext when none is set.
// Health checks are exempt from authentication; a token is sent only
// because a client with one always sends it.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spoolhq/spool/platform/clientauth"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "probe:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) error {
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
		opts, err := grpcCredentials(lookup)
		if err != nil {
			return err
		}
		return checkGRPC(ctx, *grpcAddr, *service, opts)
	default:
		return checkHTTP(ctx, *httpURL)
	}
}

// serverCertEnv names the certificate a Spool server presents; set, it
// means the probe runs beside that server.
const serverCertEnv = "SPOOL_TLS_CERT_FILE"

// grpcCredentials returns how to dial the server: pinned to its own
// certificate, or as a client configured by the environment.
func grpcCredentials(lookup func(string) (string, bool)) ([]grpc.DialOption, error) {
	if path, ok := lookup(serverCertEnv); ok && path != "" {
		cfg, err := pinned(path)
		if err != nil {
			return nil, err
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, nil
	}
	return clientauth.FromEnv(lookup).DialOptions()
}

// pinned returns a TLS configuration that accepts exactly the leaf
// certificate in path: it is the only root, and the name checked is one
// the certificate itself carries.
func pinned(path string) (*tls.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", serverCertEnv, err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s %s does not start with a PEM certificate", serverCertEnv, path)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", serverCertEnv, err)
	}
	var name string
	switch {
	case len(leaf.DNSNames) > 0:
		name = leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		name = leaf.IPAddresses[0].String()
	default:
		return nil, fmt.Errorf("%s %s names no host (no subject alternative name)", serverCertEnv, path)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name}, nil
}

func checkGRPC(ctx context.Context, addr, service string, opts []grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, opts...)
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
