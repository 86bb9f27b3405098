package clientauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/spoolhq/spool/platform/testca"
)

// testCA is a certificate authority with a server certificate for
// 127.0.0.1 and a client certificate, in files where the client reads
// them.
type testCA struct {
	*testca.CA
	caFile           string
	serverCert       tls.Certificate
	clientCertFile   string
	clientKeyFile    string
	clientCommonName string
}

func newTestCA(tb testing.TB) *testCA {
	tb.Helper()
	dir := tb.TempDir()
	ca := &testCA{CA: testca.New(tb), caFile: filepath.Join(dir, "ca.pem"), clientCommonName: "alice"}
	require.NoError(tb, os.WriteFile(ca.caFile, ca.PEM, 0o600))

	certPEM, keyPEM := ca.Issue(tb, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	var err error
	ca.serverCert, err = tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(tb, err)
	certPEM, keyPEM = ca.Issue(tb, ca.clientCommonName, x509.ExtKeyUsageClientAuth)
	ca.clientCertFile, ca.clientKeyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	require.NoError(tb, os.WriteFile(ca.clientCertFile, certPEM, 0o600))
	require.NoError(tb, os.WriteFile(ca.clientKeyFile, keyPEM, 0o600))
	return ca
}

// seen is what the server saw of the last call.
type seen struct {
	authorization []string
	clientCN      string
}

// serve starts a health server, with TLS when creds is not nil, that
// records each call's authorization header and client certificate.
func serve(tb testing.TB, creds credentials.TransportCredentials) (string, *seen) {
	tb.Helper()
	s := &seen{}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		s.authorization = md.Get("authorization")
		s.clientCN = ""
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				s.clientCN = ti.State.PeerCertificates[0].Subject.CommonName
			}
		}
		return h(ctx, req)
	}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(record)}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(srv.Stop)
	return lis.Addr().String(), s
}

func check(tb testing.TB, c Config, addr string) error {
	tb.Helper()
	opts, err := c.DialOptions()
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(addr, opts...)
	require.NoError(tb, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestFromEnv(t *testing.T) {
	env := map[string]string{
		EnvCAFile: "/ca.pem", EnvToken: " tok\n", EnvClientCert: "/c.pem", EnvClientKey: "/k.pem", EnvServerName: "localhost", "OTHER": "x",
	}
	c := FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.Equal(t, Config{CAFile: "/ca.pem", Token: "tok", CertFile: "/c.pem", KeyFile: "/k.pem", ServerName: "localhost"}, c)
	require.True(t, c.TLS())
	require.False(t, FromEnv(func(string) (string, bool) { return "", false }).TLS())
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want []string // substrings of the error; none means valid
	}{
		{name: "nothing", c: Config{}},
		{name: "token", c: Config{CAFile: "ca", Token: "t"}},
		{name: "token twice", c: Config{Token: "t", TokenFile: "f"}, want: []string{EnvToken + " or " + EnvTokenFile}},
		{name: "certificate without key", c: Config{CertFile: "c"}, want: []string{EnvClientCert + " and " + EnvClientKey}},
		{name: "both wrong", c: Config{Token: "t", TokenFile: "f", KeyFile: "k"}, want: []string{"not both", "go together"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if len(tt.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tt.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

func TestDial(t *testing.T) {
	ca := newTestCA(t)
	tlsAddr, tlsSeen := serve(t, credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{ca.serverCert}}))
	plainAddr, plainSeen := serve(t, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	mtlsAddr, mtlsSeen := serve(t, credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
	}))
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("from-file\n"), 0o600))
	otherCA := newTestCA(t)

	tests := []struct {
		name     string
		c        Config
		addr     string
		seen     *seen
		wantAuth []string
		wantCN   string
		wantErr  string
	}{
		{name: "plaintext with nothing set", c: Config{}, addr: plainAddr, seen: plainSeen},
		{name: "TLS and a token", c: Config{CAFile: ca.caFile, Token: "tok"}, addr: tlsAddr, seen: tlsSeen, wantAuth: []string{"Bearer tok"}},
		{name: "token from a file", c: Config{CAFile: ca.caFile, TokenFile: tokenFile}, addr: tlsAddr, seen: tlsSeen, wantAuth: []string{"Bearer from-file"}},
		{name: "TLS without a token", c: Config{CAFile: ca.caFile}, addr: tlsAddr, seen: tlsSeen},
		{name: "mutual TLS", c: Config{CAFile: ca.caFile, CertFile: ca.clientCertFile, KeyFile: ca.clientKeyFile}, addr: mtlsAddr, seen: mtlsSeen, wantCN: "alice"},
		// The refusal reaches the client as a TLS alert or a broken pipe,
		// whichever the race between handshake and first write gives.
		{name: "mutual TLS without a client certificate", c: Config{CAFile: ca.caFile}, addr: mtlsAddr, wantErr: "Unavailable"},
		{name: "server name override", c: Config{CAFile: ca.caFile, ServerName: "127.0.0.1"}, addr: "localhost:" + port(tlsAddr), seen: tlsSeen},
		{name: "wrong server name", c: Config{CAFile: ca.caFile, ServerName: "ingestor"}, addr: tlsAddr, wantErr: "not valid for"},
		{name: "a CA that did not sign the server", c: Config{CAFile: otherCA.caFile, Token: "tok"}, addr: tlsAddr, wantErr: "certificate signed by unknown authority"},
		// A token alone means TLS with the system's roots, which do not
		// know the test CA: the token is never sent in plaintext.
		{name: "token without a CA is never sent in plaintext", c: Config{Token: "tok"}, addr: plainAddr, wantErr: "Unavailable"},
		{name: "plaintext client, TLS server", c: Config{}, addr: tlsAddr, wantErr: "Unavailable"},
		{name: "missing CA file", c: Config{CAFile: filepath.Join(t.TempDir(), "none.pem")}, addr: tlsAddr, wantErr: "read " + EnvCAFile},
		{name: "CA file that is not PEM", c: Config{CAFile: tokenFile}, addr: tlsAddr, wantErr: "holds no PEM certificate"},
		{name: "missing token file", c: Config{CAFile: ca.caFile, TokenFile: filepath.Join(t.TempDir(), "none")}, addr: tlsAddr, wantErr: "read " + EnvTokenFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := check(t, tt.c, tt.addr)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantAuth, tt.seen.authorization)
			require.Equal(t, tt.wantCN, tt.seen.clientCN)
		})
	}
}

func TestTokenFileIsReadOnEveryCall(t *testing.T) {
	ca := newTestCA(t)
	addr, s := serve(t, credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{ca.serverCert}}))
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("first"), 0o600))
	opts, err := Config{CAFile: ca.caFile, TokenFile: tokenFile}.DialOptions()
	require.NoError(t, err)
	cc, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	for _, tok := range []string{"first", "second"} {
		require.NoError(t, os.WriteFile(tokenFile, []byte(tok), 0o600))
		_, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		require.Equal(t, []string{"Bearer " + tok}, s.authorization)
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
