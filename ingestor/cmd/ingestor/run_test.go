package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/devpki"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/grpcserve"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/testkit"
)

func TestParseConfig(t *testing.T) {
	required := map[string]string{"SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "jobs", "SPOOL_INSECURE": "true"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c config)
		wantErr []string
	}{
		{
			name: "defaults",
			env:  required,
			check: func(t *testing.T, c config) {
				require.Equal(t, ":50051", c.listen)
				require.Equal(t, 8, c.publishConcurrency)
				require.Equal(t, 2000, c.publishBuffer)
				require.Zero(t, c.maxMessageBytes)
				require.Equal(t, csvread.Limits{MaxFieldBytes: 64 << 10, MaxRecordBytes: 1 << 20, MaxHeaderBytes: 64 << 10, MaxColumns: 1024, MaxRows: 100_000_000}, c.limits)
				require.Equal(t, 4<<20, c.maxRecvMsgBytes)
				require.Equal(t, 100, c.maxErrors)
				require.Equal(t, time.Second, c.progressInterval)
				require.Equal(t, 25*time.Second, c.shutdownGrace)
				require.Equal(t, 2*time.Minute, c.abortAfter)
				require.Equal(t, 10*time.Second, c.awsTimeout)
				require.Equal(t, 8, c.maxStreams)
				require.Equal(t, 5*time.Minute, c.idleTimeout)
				require.Equal(t, grpcserve.DefaultLimits(), c.grpc)
				require.Equal(t, spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, c.envelope)
			},
		},
		{
			name: "bounds from the environment",
			env: map[string]string{"SPOOL_INSECURE": "true", "SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "t", "SPOOL_MAX_STREAMS_PER_PRINCIPAL": "2",
				"SPOOL_STREAM_IDLE_TIMEOUT": "0s", "SPOOL_GRPC_MAX_CONCURRENT_STREAMS": "3", "SPOOL_TENANT": "acme", "SPOOL_ENVELOPE_VERSION": "v1"},
			check: func(t *testing.T, c config) {
				require.Equal(t, spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, c.envelope)
				require.Equal(t, "acme", c.tenant)
				require.Equal(t, 2, c.maxStreams)
				require.Zero(t, c.idleTimeout)
				require.Equal(t, 3, c.grpc.MaxConcurrentStreams)
			},
		},
		{name: "bad tenant", env: required, args: []string{"-tenant", "a|b"}, wantErr: []string{"-tenant"}},
		{name: "bad envelope version", env: required, args: []string{"-envelope-version", "3"}, wantErr: []string{`-envelope-version: envelope version "3": want v1 or v2`}},
		{name: "bad bounds", env: required, args: []string{"-max-streams-per-principal", "-1", "-grpc-keepalive-min-time", "0s"},
			wantErr: []string{"-max-streams-per-principal", "-grpc-keepalive-min-time"}},
		{
			name: "environment and flags",
			args: []string{"-publish-buffer", "50", "-log-level", "debug"},
			env:  map[string]string{"SPOOL_INSECURE": "true", "SPOOL_QUEUE_URL": "http://q", "SPOOL_TABLE": "t", "SPOOL_MAX_MESSAGE_BYTES": "2048", "SPOOL_PUBLISH_BUFFER": "9", "SPOOL_ABORT_AFTER": "30s", "SPOOL_AWS_TIMEOUT": "3s"},
			check: func(t *testing.T, c config) {
				require.Equal(t, 3*time.Second, c.awsTimeout)
				require.Equal(t, 30*time.Second, c.abortAfter)
				require.Equal(t, "http://q", c.queueURL)
				require.Equal(t, 2048, c.maxMessageBytes)
				require.Equal(t, 50, c.publishBuffer, "the flag wins over the environment")
				require.Equal(t, "DEBUG", c.logLevel.String())
			},
		},
		{name: "required missing", wantErr: []string{"-queue-url", "-table"}},
		{name: "bad values", env: required, args: []string{"-publish-concurrency", "0", "-max-errors", "-1", "-aws-timeout", "0s"}, wantErr: []string{"publish-concurrency", "max-errors", "aws-timeout"}},
		{name: "lease too short", env: required, args: []string{"-abort-after", "1s"}, wantErr: []string{"-abort-after must be more than twice -progress-interval"}},
		{name: "bad environment", env: map[string]string{"SPOOL_PROGRESS_INTERVAL": "soon"}, wantErr: []string{"SPOOL_PROGRESS_INTERVAL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, io.Discard, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			for _, w := range tt.wantErr {
				require.ErrorContains(t, err, w)
			}
			if tt.wantErr == nil {
				require.NoError(t, err)
				tt.check(t, c)
			}
		})
	}
}

func TestRunRequiresConfig(t *testing.T) {
	t.Setenv("SPOOL_QUEUE_URL", "")
	t.Setenv("SPOOL_TABLE", "")
	err := run(context.Background(), nil, io.Discard, io.Discard)
	require.ErrorContains(t, err, "-queue-url (or $SPOOL_QUEUE_URL) is required")
}

// TestRunServes runs the whole program against the emulators, configured
// only by environment as in a container, and checks the wiring: health,
// the queue's maximum message size read at startup, a stream published,
// and a clean stop.
func TestRunServes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts emulators")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sqsURL, ddbURL := emutest.Start(t, emulator.SQS), emutest.Start(t, emulator.DynamoDB)
	q := sqs.NewFromConfig(emutest.Config(sqsURL))
	name := "run-" + uuid.NewString()[:8]
	created, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String(name),
		Attributes: map[string]string{string(sqstypes.QueueAttributeNameMaximumMessageSize): "1024"},
	})
	require.NoError(t, err)
	require.NoError(t, provision.EnsureTable(ctx, dynamodb.NewFromConfig(emutest.Config(ddbURL)), "jobs"))

	none := filepath.Join(t.TempDir(), "none")
	// The profile file is read at startup; the stream below names its
	// skip-rows profile, so a row too large for the queue is left out.
	profiles := filepath.Join(t.TempDir(), "profiles.yaml")
	require.NoError(t, os.WriteFile(profiles, []byte("profiles: [{name: lenient, row_policy: skip-rows}]\n"), 0o600))
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_SQS": sqsURL, "AWS_ENDPOINT_URL_DYNAMODB": ddbURL, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "",
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true",
		"SPOOL_QUEUE_URL": aws.ToString(created.QueueUrl), "SPOOL_TABLE": "jobs", "SPOOL_MAX_MESSAGE_BYTES": "",
		"SPOOL_PROFILES": profiles,
	} {
		t.Setenv(k, v)
	}
	// The service runs as deployed: TLS, client certificates and tokens.
	pki, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	for _, kv := range pki.ServerEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	clientTLS, err := pki.ClientTLS()
	require.NoError(t, err)
	port, err := emulator.FreePort()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	metricsPort, err := emulator.FreePort()
	require.NoError(t, err)
	metricsAddr := "127.0.0.1:" + strconv.Itoa(metricsPort)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	logs := &testkit.Buffer{}
	go func() {
		args := []string{"-listen", addr, "-metrics-listen", metricsAddr, "-max-message-bytes", "0", "-shutdown-grace", "200ms"}
		done <- run(runCtx, args, io.Discard, io.MultiWriter(logs, t.Output()))
	}()
	var stopped bool
	t.Cleanup(func() {
		if !stopped {
			// The test failed before run was stopped; what run returns
			// may say why.
			stop()
			if err := <-done; err != nil {
				t.Logf("run: %v", err)
			}
		}
	})

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 30*time.Second, 20*time.Millisecond)

	// Without a client certificate or a token, nothing but health answers.
	anonTLS, err := pki.ClientTLS()
	require.NoError(t, err)
	anonTLS.Certificates = nil
	anon, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(anonTLS)))
	require.NoError(t, err)
	defer anon.Close()
	_, err = healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "health is exempt")
	_, err = spoolv1.NewIngestServiceClient(anon).ListProfiles(ctx, &spoolv1.ListProfilesRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	stream, err := spoolv1.NewIngestServiceClient(conn).StreamFile(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: &spoolv1.FileHeader{FileName: "run.csv", Profile: "lenient"}}}))
	csv := "id,note\n1,short\n2," + strings.Repeat("x", 2000) + "\n3,short\n"
	require.NoError(t, stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: []byte(csv)}}))
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	require.EqualValues(t, 3, resp.GetRowsReceived())
	require.EqualValues(t, 2, resp.GetRowsPublished())
	// The queue's 1,024-byte limit, read at startup, refused row 2.
	require.Len(t, resp.GetErrors(), 1)
	require.EqualValues(t, 2, resp.GetErrors()[0].GetRow())
	require.Contains(t, resp.GetErrors()[0].GetReason(), "max-message-bytes=1024")
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, resp.GetJob().GetState())

	got, err := spoolv1.NewIngestServiceClient(conn).GetJob(ctx, &spoolv1.GetJobRequest{JobId: resp.GetJobId()})
	require.NoError(t, err)
	require.EqualValues(t, 2, got.GetJob().GetTotal())
	require.Equal(t, devpki.ClientName, got.GetJob().GetSubmittedBy(), "the client certificate names the submitter")

	// The metrics page counts the same rows.
	page := scrapeMetrics(t, "http://"+metricsAddr+"/metrics")
	require.Contains(t, page, `spool_ingest_rows_total{result="published"} 2`)
	require.Contains(t, page, `spool_ingest_rows_total{result="rejected"} 1`)
	require.Contains(t, page, `grpc_server_handled_total{grpc_code="OK",grpc_method="StreamFile",grpc_service="spool.v1.IngestService",grpc_type="client_stream"} 1`)

	// A stream still open at shutdown is cut off after the grace period,
	// and its job is ABORTED by the time run returns.
	open, err := spoolv1.NewIngestServiceClient(conn).StreamFile(ctx)
	require.NoError(t, err)
	require.NoError(t, open.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: &spoolv1.FileHeader{Columns: []string{"id"}}}}))
	require.NoError(t, open.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: []byte("1\n")}}))
	var openID string
	require.Eventually(t, func() bool {
		openID = createdJob(logs.String(), resp.GetJobId())
		return openID != ""
	}, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, scrapeMetrics(t, "http://"+metricsAddr+"/metrics"), "spool_ingest_active_streams 1")
	stop()
	require.NoError(t, <-done)
	stopped = true
	_, err = net.DialTimeout("tcp", metricsAddr, time.Second)
	require.Error(t, err, "the metrics listener closed with the service")
	j, err := jobstore.New(dynamodb.NewFromConfig(emutest.Config(ddbURL)), "jobs").Get(ctx, openID)
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_ABORTED, j.GetState())
	require.Contains(t, j.GetStateReason(), "stream cancelled")
}

// scrapeMetrics reads a metrics page.
func scrapeMetrics(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// createdJob returns the id of a job the log says was created, other than
// except.
func createdJob(logs, except string) string {
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg   string `json:"msg"`
			JobID string `json:"job_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "job created" && rec.JobID != except {
			return rec.JobID
		}
	}
	return ""
}
