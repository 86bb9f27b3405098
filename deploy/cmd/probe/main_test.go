package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spoolhq/spool/platform/testca"
)

// startHealthServer serves grpc.health.v1 on a free loopback port with the
// whole server in the given status and "spool.v1.IngestService" SERVING,
// and stops it at cleanup.
func startHealthServer(tb testing.TB, status healthpb.HealthCheckResponse_ServingStatus, opts ...grpc.ServerOption) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	srv := grpc.NewServer(opts...)
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
			err := run(context.Background(), tt.args, noEnv, io.Discard)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// selfSigned writes a self-signed server certificate for host (a DNS name
// or an IP address) and returns its file and the TLS server option.
func selfSigned(tb testing.TB, host string) (string, grpc.ServerOption) {
	tb.Helper()
	certPEM, keyPEM := testca.SelfSigned(tb, host)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(tb, err)
	path := filepath.Join(tb.TempDir(), "server.pem")
	require.NoError(tb, os.WriteFile(path, certPEM, 0o600))
	return path, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
}

func TestRunTLS(t *testing.T) {
	// On ECS the server's certificate names the service, not 127.0.0.1.
	serviceCert, serviceTLS := selfSigned(t, "ingestor.spool.internal")
	service := startHealthServer(t, healthpb.HealthCheckResponse_SERVING, serviceTLS)
	loopbackCert, loopbackTLS := selfSigned(t, "127.0.0.1")
	loopback := startHealthServer(t, healthpb.HealthCheckResponse_SERVING, loopbackTLS)
	plain := startHealthServer(t, healthpb.HealthCheckResponse_SERVING)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))

	tests := []struct {
		name    string
		addr    string
		env     map[string]string
		wantErr string
	}{
		{name: "beside the server: its own certificate, whatever its names", addr: service, env: map[string]string{serverCertEnv: serviceCert}},
		{name: "beside another server", addr: service, env: map[string]string{serverCertEnv: loopbackCert}, wantErr: "certificate"},
		{name: "as a client with the CA", addr: loopback, env: map[string]string{"SPOOL_CA_FILE": loopbackCert}},
		{name: "as a client with a token", addr: loopback, env: map[string]string{"SPOOL_CA_FILE": loopbackCert, "SPOOL_TOKEN": "t"}},
		{name: "as a client, name not in the certificate", addr: service, env: map[string]string{"SPOOL_CA_FILE": serviceCert}, wantErr: "IP SANs"},
		{name: "plaintext to a TLS server", addr: loopback, wantErr: "check health of"},
		{name: "TLS to a plaintext server", addr: plain, env: map[string]string{serverCertEnv: loopbackCert}, wantErr: "check health of"},
		{name: "server certificate file is not PEM", addr: service, env: map[string]string{serverCertEnv: notPEM}, wantErr: "does not start with a PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), []string{"-grpc", tt.addr, "-timeout", "2s"}, envOf(tt.env), io.Discard)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}
