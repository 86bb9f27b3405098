package e2e

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/devpki"
	"github.com/spoolhq/spool/platform/emulator"
)

// Outbound authentication against a sink that requires it: mutual TLS,
// OAuth2 tokens that expire during the job, and signatures across a
// secret rotation. In each, every row is delivered exactly once and the
// sink refused nothing it should have accepted.

const defaultOutboundRows = 3000

// sinkAuth is the sink's /stats auth counters.
type sinkAuth struct {
	NoClientCert int64 `json:"no_client_cert"`
	Unauthorized int64 `json:"unauthorized"`
	TokensIssued int64 `json:"tokens_issued"`
	BadSignature int64 `json:"bad_signature"`
	Signed       int64 `json:"signed"`
}

func getSinkAuth(t *testing.T, s *stack.Stack) sinkAuth {
	t.Helper()
	var st struct {
		Auth sinkAuth `json:"auth"`
	}
	getJSON(t, s.Sink.Addr+"/stats", &st)
	return st.Auth
}

// runOutbound sends a file of rows through s and checks that it completes
// with every row delivered once, in the sink and in the ledger, each in one
// attempt: a refresh after a 401 is part of the attempt, not another one.
func runOutbound(t *testing.T, s *stack.Stack, rows int, during func(jobID string)) {
	t.Helper()
	resp := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "outbound.csv"})
	jobID := resp.GetJobId()
	if during != nil {
		during(jobID)
	}
	final := watchToEnd(t, s.Dispatchers[0].Addr, jobID, 3*time.Minute)
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, final.GetJob().GetState())
	require.Equal(t, int64(rows), final.GetJob().GetDelivered())
	requireEachRowOnce(t, s, jobID, int64(rows))
	require.Zero(t, getSinkTotals(t, s, jobID).Duplicates)
	for row, e := range reportJob(t, s.Dispatchers[1].Addr, jobID).byRow(t) {
		require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, e.GetState(), "row %d", row)
		require.EqualValues(t, 1, e.GetAttempts(), "row %d", row)
	}
}

func TestOutboundMutualTLS(t *testing.T) {
	requireFlags(t, "sink", "https-listen", "https-client-ca-file")
	requireFlags(t, "dispatcher", "destination-client-cert-file")
	pki, httpsAddr := sinkTLS(t)
	s := startStack(t, 2, func(o *stack.Options) {
		o.SinkArgs = []string{"-https-listen", httpsAddr, "-https-cert-file", pki.ServerCertFile(),
			"-https-key-file", pki.ServerKeyFile(), "-https-client-ca-file", pki.CAFile()}
		o.DispatcherArgs = []string{"-destination-url", "https://" + httpsAddr + "/pay",
			"-destination-ca-file", pki.CAFile(), "-destination-tls-min-version", "1.3",
			"-destination-client-cert-file", pki.ClientCertFile(), "-destination-client-key-file", pki.ClientKeyFile()}
	})

	// The sink insists: no certificate, no handshake; plain HTTP, no
	// transaction.
	pool, err := pki.CertPool()
	require.NoError(t, err)
	conn, err := tls.Dial("tcp", httpsAddr, &tls.Config{RootCAs: pool})
	if err == nil {
		// TLS 1.3 reports the refused certificate on the first read.
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	require.Error(t, err, "a client without a certificate got through")
	plain, err := http.Post(s.Sink.Addr+"/pay", "application/json", strings.NewReader(`{"spool_job_id":"x","spool_row":1}`))
	require.NoError(t, err)
	plain.Body.Close()
	require.Equal(t, http.StatusForbidden, plain.StatusCode)

	runOutbound(t, s, envInt(t, "SPOOL_OUTBOUND_ROWS", defaultOutboundRows), nil)
	require.EqualValues(t, 1, getSinkAuth(t, s).NoClientCert, "only the test's own plain request was refused")
}

// TestOutboundOAuth2TokensExpire: the sink's tokens live 1s but it tells
// clients an hour, as a server that revokes early does, so the
// dispatchers keep sending tokens it has expired: each 401 makes them fetch
// a new token and send once more, within the same claim. Destination and
// token endpoint are the sink's HTTPS listener, at an address known before
// the stack starts.
func TestOutboundOAuth2TokensExpire(t *testing.T) {
	requireFlags(t, "sink", "oauth2-client-id")
	requireFlags(t, "dispatcher", "destination-oauth2-token-url")
	pki, httpsAddr := sinkTLS(t)
	secretFile := filepath.Join(t.TempDir(), "client-secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("e2e-client-secret\n"), 0o600))
	s := startStack(t, 2, func(o *stack.Options) {
		o.SinkArgs = []string{"-https-listen", httpsAddr, "-https-cert-file", pki.ServerCertFile(), "-https-key-file", pki.ServerKeyFile(),
			"-oauth2-client-id", "spool", "-oauth2-client-secret", "e2e-client-secret",
			"-oauth2-token-ttl", "1s", "-oauth2-advertised-ttl", "1h", "-latency", "2ms"}
		o.DispatcherArgs = []string{"-destination-url", "https://" + httpsAddr + "/pay", "-destination-ca-file", pki.CAFile(),
			"-destination-oauth2-token-url", "https://" + httpsAddr + "/oauth2/token",
			"-destination-oauth2-client-id", "spool", "-destination-oauth2-client-secret-file", secretFile}
	})
	start := time.Now()
	runOutbound(t, s, envInt(t, "SPOOL_OUTBOUND_ROWS", defaultOutboundRows), nil)
	a := getSinkAuth(t, s)
	took := time.Since(start)
	require.Greater(t, a.TokensIssued, int64(2), "tokens expired during the job (%s)", took)
	require.Positive(t, a.Unauthorized, "no expired token was refused")
	t.Logf("%s: %d tokens issued, %d requests refused 401 and sent again", took.Round(time.Millisecond), a.TokensIssued, a.Unauthorized)
	for _, d := range s.Dispatchers {
		b, err := os.ReadFile(d.LogPath)
		require.NoError(t, err)
		require.NotContains(t, string(b), "e2e-client-secret", "%s logged the client secret", d.Name)
	}
}

// sinkTLS makes a throwaway PKI and picks the address of the sink's HTTPS
// listener.
func sinkTLS(t *testing.T) (*devpki.PKI, string) {
	t.Helper()
	pki, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	port, err := emulator.FreePort()
	require.NoError(t, err)
	return pki, "127.0.0.1:" + strconv.Itoa(port)
}

// TestOutboundSignatureRotation: the dispatchers sign with the old and the
// new secret; midway through the job the sink stops accepting the old one.
// Nothing is refused, before or after.
func TestOutboundSignatureRotation(t *testing.T) {
	requireFlags(t, "sink", "signing-secrets")
	requireFlags(t, "dispatcher", "destination-signing-secrets-file")
	const (
		oldSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		newSecret = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="
	)
	secrets := filepath.Join(t.TempDir(), "signing-secrets")
	require.NoError(t, os.WriteFile(secrets, []byte(oldSecret+"\n"+newSecret+"\n"), 0o600))
	s := startStack(t, 2, func(o *stack.Options) {
		o.SinkArgs = []string{"-signing-secrets", oldSecret, "-latency", "2ms"}
		o.DispatcherArgs = []string{"-destination-signing-secrets-file", secrets}
	})
	rows := envInt(t, "SPOOL_OUTBOUND_ROWS", defaultOutboundRows)
	var before int64
	runOutbound(t, s, rows, func(jobID string) {
		require.Eventually(t, func() bool { return getSinkTotals(t, s, jobID).Distinct >= int64(rows/4) }, 2*time.Minute, 20*time.Millisecond)
		resp, err := http.Post(s.Sink.Addr+"/admin/signing-secrets", "application/json", strings.NewReader(`{"secrets":["`+newSecret+`"]}`))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		before = getSinkTotals(t, s, jobID).Distinct
	})
	a := getSinkAuth(t, s)
	require.Zero(t, a.BadSignature)
	require.EqualValues(t, rows, a.Signed)
	require.Less(t, before, int64(rows), "the rotation came after the job's end")
	t.Logf("%d rows signed; the sink rotated to the new secret after %d", rows, before)
}
