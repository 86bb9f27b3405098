package grpcserve

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
	"github.com/spoolhq/spool/platform/devpki"
	"github.com/spoolhq/spool/platform/testkit"
)

func TestSecurityFlagsCheck(t *testing.T) {
	full := SecurityFlags{CertFile: "c", KeyFile: "k", PolicyFile: "p", JWKSFile: "j", Issuer: "i", Audience: "a"}
	tests := []struct {
		name    string
		mod     func(*SecurityFlags)
		wantErr []string
	}{
		{name: "tokens", mod: func(*SecurityFlags) {}},
		{name: "client certificates only", mod: func(f *SecurityFlags) { f.JWKSFile, f.Issuer, f.Audience, f.ClientCAFile = "", "", "", "ca" }},
		{name: "insecure alone", mod: func(f *SecurityFlags) { *f = SecurityFlags{Insecure: true} }},
		{name: "nothing", mod: func(f *SecurityFlags) { *f = SecurityFlags{} }, wantErr: []string{
			"SPOOL_TLS_CERT_FILE", "SPOOL_TLS_KEY_FILE", "SPOOL_INSECURE=true", "SPOOL_AUTH_POLICY_FILE", "SPOOL_AUTH_JWKS_FILE", "SPOOL_TLS_CLIENT_CA_FILE",
		}},
		{name: "insecure with TLS", mod: func(f *SecurityFlags) { f.Insecure = true }, wantErr: []string{"SPOOL_INSECURE=true serves plaintext"}},
		{name: "no policy", mod: func(f *SecurityFlags) { f.PolicyFile = "" }, wantErr: []string{"SPOOL_AUTH_POLICY_FILE"}},
		{name: "both jwks", mod: func(f *SecurityFlags) { f.JWKSURL = "https://idp/jwks" }, wantErr: []string{"not both"}},
		{name: "no audience", mod: func(f *SecurityFlags) { f.Audience = "" }, wantErr: []string{"SPOOL_AUTH_AUDIENCE"}},
		{name: "key without certificate", mod: func(f *SecurityFlags) { f.CertFile = "" }, wantErr: []string{"SPOOL_TLS_CERT_FILE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := full
			tt.mod(&f)
			err := f.Check()
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				return
			}
			for _, w := range tt.wantErr {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

// profilesServer answers ListProfiles with the caller's subject as the one
// profile's name, so a test sees who the server thinks is calling.
type profilesServer struct {
	spoolv1.UnimplementedIngestServiceServer
}

func (profilesServer) ListProfiles(ctx context.Context, _ *spoolv1.ListProfilesRequest) (*spoolv1.ListProfilesResponse, error) {
	p, _ := auth.FromContext(ctx)
	return &spoolv1.ListProfilesResponse{Profiles: []*spoolv1.Profile{{Name: p.Subject + "/" + p.Method}}}, nil
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// startSecure serves profilesServer with the PKI's settings, with a rule
// only for ListProfiles and GetJob (StreamFile is left out on purpose).
func startSecure(t *testing.T, pki *devpki.PKI, reflection bool, logs *testkit.Buffer) string {
	t.Helper()
	f := SecurityFlags{
		CertFile: pki.ServerCertFile(), KeyFile: pki.ServerKeyFile(), ClientCAFile: pki.CAFile(), PolicyFile: pki.PolicyFile(),
		JWKSFile: pki.JWKSFile(), Issuer: devpki.Issuer, Audience: devpki.Audience, Reflection: reflection,
	}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	sec, err := f.Load(context.Background(), log, auth.Rules{
		spoolv1.IngestService_ListProfiles_FullMethodName: {auth.PermView},
		spoolv1.IngestService_GetJob_FullMethodName:       {auth.PermView, auth.PermSubmit},
	})
	require.NoError(t, err)
	srv := New(log, sec)
	spoolv1.RegisterIngestServiceServer(srv, profilesServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func TestAuthInterceptor(t *testing.T) {
	pki, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	logs := &testkit.Buffer{}
	addr := startSecure(t, pki, false, logs)
	pool, err := pki.CertPool()
	require.NoError(t, err)
	withCert, err := pki.ClientTLS()
	require.NoError(t, err)
	plainTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	token := func(roles ...string) string {
		tok, err := pki.Token("alice", roles, time.Hour)
		require.NoError(t, err)
		return tok
	}
	viewer := token("viewer")

	tests := []struct {
		name     string
		tls      *tls.Config
		auth     string
		method   string
		wantCode codes.Code
		wantMsg  string
		wantWho  string
	}{
		{name: "no credential", tls: plainTLS, method: "ListProfiles", wantCode: codes.Unauthenticated, wantMsg: "no credential"},
		{name: "viewer token", tls: plainTLS, auth: "Bearer " + viewer, method: "ListProfiles", wantWho: "alice/jwt"},
		{name: "scheme in lower case", tls: plainTLS, auth: "bearer " + viewer, method: "ListProfiles", wantWho: "alice/jwt"},
		{name: "basic auth", tls: plainTLS, auth: "Basic YWxpY2U6cHc=", method: "ListProfiles", wantCode: codes.Unauthenticated, wantMsg: "Bearer <token>"},
		{name: "bearer without token", tls: plainTLS, auth: "Bearer ", method: "ListProfiles", wantCode: codes.Unauthenticated},
		{name: "submitter lacks view", tls: plainTLS, auth: "Bearer " + token("submitter"), method: "ListProfiles", wantCode: codes.PermissionDenied, wantMsg: `permission "view" required`},
		{name: "either of two permissions", tls: plainTLS, auth: "Bearer " + token("viewer"), method: "GetJob", wantCode: codes.Unimplemented},
		{name: "neither of two permissions", tls: plainTLS, auth: "Bearer " + token(), method: "GetJob", wantCode: codes.PermissionDenied, wantMsg: `permission "view" or "submit" required`},
		{name: "method without a rule", tls: withCert, method: "StreamFile", wantCode: codes.PermissionDenied, wantMsg: "not open to anyone"},
		{name: "client certificate", tls: withCert, method: "ListProfiles", wantWho: devpki.ClientName + "/mtls"},
		{name: "token wins over certificate", tls: withCert, auth: "Bearer " + token("submitter"), method: "ListProfiles", wantCode: codes.PermissionDenied},
		{name: "bad token is not saved by a certificate", tls: withCert, auth: "Bearer x.y.z", method: "ListProfiles", wantCode: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tt.tls))}
			if tt.auth != "" {
				opts = append(opts, grpc.WithPerRPCCredentials(bearer(tt.auth)))
			}
			conn, err := grpc.NewClient(addr, opts...)
			require.NoError(t, err)
			defer conn.Close()
			c := spoolv1.NewIngestServiceClient(conn)
			ctx := context.Background()
			switch tt.method {
			case "ListProfiles":
				var resp *spoolv1.ListProfilesResponse
				resp, err = c.ListProfiles(ctx, &spoolv1.ListProfilesRequest{})
				if err == nil {
					assert.Equal(t, tt.wantWho, resp.GetProfiles()[0].GetName())
				}
			case "GetJob":
				_, err = c.GetJob(ctx, &spoolv1.GetJobRequest{JobId: "j"})
			case "StreamFile":
				var s grpc.ClientStreamingClient[spoolv1.StreamFileRequest, spoolv1.StreamFileResponse]
				if s, err = c.StreamFile(ctx); err == nil {
					_, err = s.CloseAndRecv()
				}
			}
			require.Equal(t, tt.wantCode, status.Code(err), "%v", err)
			if tt.wantMsg != "" {
				assert.Contains(t, status.Convert(err).Message(), tt.wantMsg)
			}
		})
	}

	// Two authorization headers are refused rather than one picked.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(plainTLS)))
	require.NoError(t, err)
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+viewer, "authorization", "Bearer "+viewer)
	_, err = spoolv1.NewIngestServiceClient(conn).ListProfiles(ctx, &spoolv1.ListProfilesRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	// Health needs no credential; reflection is off unless enabled.
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, codes.Unimplemented, reflectionCode(t, conn))

	// Refusals are logged with method, subject, permission and code, and
	// never with the token.
	out := logs.String()
	assert.Contains(t, out, `"msg":"call refused"`)
	assert.Contains(t, out, `"method":"/spool.v1.IngestService/ListProfiles"`)
	assert.Contains(t, out, `"subject":"alice"`)
	assert.Contains(t, out, `"permission":"view"`)
	assert.Contains(t, out, `"code":"PermissionDenied"`)
	assert.False(t, strings.Contains(out, viewer), "a token was logged")
}

func TestReflectionWhenEnabled(t *testing.T) {
	pki, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	addr := startSecure(t, pki, true, &testkit.Buffer{})
	pool, err := pki.CertPool()
	require.NoError(t, err)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	require.NoError(t, err)
	defer conn.Close()
	require.Equal(t, codes.OK, reflectionCode(t, conn), "reflection answers, without a credential")
}

func reflectionCode(t *testing.T, conn *grpc.ClientConn) codes.Code {
	t.Helper()
	s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	require.NoError(t, err)
	// A refused stream fails Send or not, depending on timing; Recv
	// returns the status either way.
	_ = s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	_, err = s.Recv()
	return status.Code(err)
}
