package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/spoolhq/spool/cli/internal/spooltest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/devpki"
)

// tokenGate is the servers' authentication (platform/auth, with the dev
// PKI's policy) in front of a fake ingestor, and records the
// authorization header of every call.
type tokenGate struct {
	allowed, viewOnly string
	authn             *auth.Authenticator

	mu   sync.Mutex
	seen []string
}

func (g *tokenGate) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	g.mu.Lock()
	g.seen = append(g.seen, strings.Join(md.Get("authorization"), ","))
	g.mu.Unlock()
	ctx, err := g.authn.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (g *tokenGate) lastSeen() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.seen) == 0 {
		return ""
	}
	return g.seen[len(g.seen)-1]
}

// tlsHarness is a harness whose ingestor serves TLS with a devpki server
// certificate and asks for tokens.
func tlsHarness(t *testing.T) (*harness, *devpki.PKI, *tokenGate) {
	t.Helper()
	pki, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	admin, err := pki.Token("alice", []string{"admin"}, time.Hour)
	require.NoError(t, err)
	viewer, err := pki.Token("bob", []string{"viewer"}, time.Hour)
	require.NoError(t, err)
	cert, err := tls.LoadX509KeyPair(pki.ServerCertFile(), pki.ServerKeyFile())
	require.NoError(t, err)
	policy, err := auth.LoadPolicy(pki.PolicyFile())
	require.NoError(t, err)
	tokens, err := auth.NewTokenVerifier(t.Context(), auth.TokenConfig{JWKSFile: pki.JWKSFile(), Issuer: devpki.Issuer, Audience: devpki.Audience})
	require.NoError(t, err)
	// GetJob asks for submit alone here, so that a viewer is refused.
	rules := auth.Rules{spoolv1.IngestService_GetJob_FullMethodName: {auth.PermSubmit}}
	gate := &tokenGate{allowed: admin, viewOnly: viewer, authn: auth.NewAuthenticator(tokens, policy, rules, slog.New(slog.DiscardHandler))}

	h := newHarness(t)
	// Transport credentials come from the environment, as in a real run,
	// and the connection is real loopback TCP: how a plaintext client
	// meets a TLS server is the transport's doing, and the in-memory one
	// sometimes closes its pipe under the client's write instead of
	// answering the preface as TCP does.
	h.app.dialOpts = nil
	ingest := &spooltest.Ingest{Jobs: map[string]*spoolv1.Job{"job-1": job(spoolv1.JobState_JOB_STATE_SEALED, 0, 0, 10)}}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})),
		grpc.UnaryInterceptor(gate.unary),
	)
	spoolv1.RegisterIngestServiceServer(srv, ingest)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	h.env["SPOOL_INGESTOR_ADDR"] = lis.Addr().String()
	return h, pki, gate
}

func TestCredentials(t *testing.T) {
	type creds struct{ ca, token string }
	tests := []struct {
		name string
		// env sets SPOOL_CA_FILE and SPOOL_TOKEN: "ca" for the PKI's CA,
		// "admin"/"viewer"/"bad" for a token.
		env     creds
		wantErr []string
		// notWant must not be in the error.
		notWant string
	}{
		{name: "CA and token", env: creds{ca: "ca", token: "admin"}},
		{
			name: "no token", env: creds{ca: "ca"},
			wantErr: []string{"Unauthenticated: no credential", "set SPOOL_TOKEN (or SPOOL_TOKEN_FILE)"},
		},
		{
			name: "a token the server does not accept", env: creds{ca: "ca", token: "bad"},
			wantErr: []string{"Unauthenticated: invalid bearer token", "valid, unexpired token"},
		},
		{
			name: "a token without the permission", env: creds{ca: "ca", token: "viewer"},
			wantErr: []string{`PermissionDenied: permission "submit" required`, "roles do not grant this"},
		},
		{
			name: "plaintext to a TLS server", env: creds{},
			wantErr: []string{"Unavailable", "it probably wants TLS; set SPOOL_CA_FILE"},
			notWant: "is the ingestor running",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pki, gate := tlsHarness(t)
			tokens := map[string]string{"admin": gate.allowed, "viewer": gate.viewOnly, "bad": "not-a-token"}
			if tt.env.ca != "" {
				h.env["SPOOL_CA_FILE"] = pki.CAFile()
			}
			if tt.env.token != "" {
				h.env["SPOOL_TOKEN"] = tokens[tt.env.token]
			}
			err := h.run("status", "job-1")
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				require.Equal(t, "Bearer "+gate.allowed, gate.lastSeen())
				return
			}
			require.Error(t, err)
			for _, w := range tt.wantErr {
				require.Contains(t, err.Error(), w)
			}
			if tt.notWant != "" {
				require.NotContains(t, err.Error(), tt.notWant)
			}
			for _, tok := range tokens {
				require.NotContains(t, err.Error(), tok, "an error never shows a token")
			}
		})
	}
}

// TestCredentialsFromStackEnv checks that after `make up` the CLI finds
// the CA and a token file in .spool/stack.env by itself.
func TestCredentialsFromStackEnv(t *testing.T) {
	h, pki, gate := tlsHarness(t)
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ".spool"), 0o755))
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(gate.allowed+"\n"), 0o600))
	stackEnv := "SPOOL_CA_FILE=" + pki.CAFile() + "\nSPOOL_TOKEN_FILE=" + tokenFile + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".spool", "stack.env"), []byte(stackEnv), 0o600))
	t.Chdir(dir)

	require.NoError(t, h.run("status", "job-1"))
	require.Equal(t, "Bearer "+gate.allowed, gate.lastSeen())

	// Both a token and a token file: which one was meant is unclear.
	h.env["SPOOL_TOKEN"] = gate.allowed
	err := h.run("status", "job-1")
	require.ErrorContains(t, err, "set SPOOL_TOKEN or SPOOL_TOKEN_FILE, not both")
}
