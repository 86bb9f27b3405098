package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spoolhq/spool/e2e/internal/faultproxy"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// The paths an operator takes now and then: dead letters and their
// redrive, settling an UNKNOWN row, two submissions of one key racing,
// `spool init`. Besides what each test checks, they are how the AWS calls
// of these rare paths get recorded for the IAM check (aws-calls.json).

// TestRedriveDeadLetters: with a budget of one attempt, rows that meet a
// destination that is down are dead-lettered at once; `spool deadletters`
// lists them and `spool redrive` puts them back, after which every row is
// delivered once.
func TestRedriveDeadLetters(t *testing.T) {
	const rows = 40
	s := startStack(t, 1, func(o *stack.Options) {
		// Every call here is the harness's admin, so no second person
		// could approve a four-eyes request (TestFourEyes has two).
		o.DispatcherArgs = []string{"-max-attempts", "1", "-receiving-delay", "1s", "-concurrency", "4", "-four-eyes", "none"}
	})
	resp, err := http.Post(s.Sink.Addr+"/down?for=4s", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	jobID := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "dead.csv"}).GetJobId()
	req := &spoolv1.GetJobRequest{JobId: jobID}
	job := waitJob(t, s, req, time.Minute, "job settled with dead letters", func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	dead := job.GetDeadLettered()
	require.Positive(t, dead, "rows dead-lettered while the destination was down: %v", job)

	out, err := runCLI(t, s, "deadletters", jobID)
	require.NoError(t, err, out)
	require.Contains(t, out, fmt.Sprintf("%d dead letters", dead))
	out, err = runCLI(t, s, "redrive", jobID)
	require.NoError(t, err, out)

	waitJob(t, s, req, time.Minute, "redriven rows delivered", func(j *spoolv1.Job) bool {
		return j.GetDelivered() == rows && j.GetDeadLettered() == 0
	})
	requireEachRowOnce(t, s, jobID, rows)
	t.Logf("%d rows, %d dead-lettered while the destination was down, redriven and delivered", rows, dead)
}

// TestResolveUnknownRows: a destination that applies every request and
// answers too late leaves every row UNKNOWN under hold. An operator
// settles one as delivered and has another sent again; the resend reaches
// the destination with the same key.
func TestResolveUnknownRows(t *testing.T) {
	const rows = 3
	s := startStack(t, 1, func(o *stack.Options) {
		o.SinkArgs = []string{"-hang-rate", "1", "-hang-for", "1500ms"}
		o.DispatcherArgs = []string{"-destination-timeout", "500ms", "-receiving-delay", "1s", "-four-eyes", "none"}
	})
	jobID := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "unknown.csv"}).GetJobId()
	waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, time.Minute, "every row UNKNOWN", func(j *spoolv1.Job) bool {
		return isFinal(j.GetState()) && j.GetUnknown() == rows
	})

	out, err := runCLI(t, s, "resolve", jobID, "1", "--delivered")
	require.NoError(t, err, out)
	require.Contains(t, out, "DELIVERED")
	out, err = runCLI(t, s, "resolve", jobID, "2", "--resend")
	require.NoError(t, err, out)

	require.Eventually(t, func() bool { return sinkLedger(t, s, jobID)[2].Applied == 2 }, time.Minute, 200*time.Millisecond,
		"the resent row reached the destination a second time")
	ledger := sinkLedger(t, s, jobID)
	require.EqualValues(t, 1, ledger[1].Applied, "a row settled as delivered is not sent again")
	require.EqualValues(t, 1, ledger[3].Applied, "an unresolved row is not sent again")
	entries := reportJob(t, s.Dispatchers[0].Addr, jobID).byRow(t)
	require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, entries[1].GetState())
	require.Equal(t, "e2e-admin", entries[1].GetResolvedBy(), "the token's subject resolved it")
	require.Equal(t, "e2e-admin", entries[2].GetResolvedBy(), "the resent row keeps who resolved it")
}

// TestFourEyes: under the default four-eyes rule, an operator's resolve
// of an UNKNOWN row only records a request, which the same operator cannot
// approve; nothing changes until a second principal (the approver) does.
// The audit trail lists the request, the refused approval and the
// approval, each with who made it.
func TestFourEyes(t *testing.T) {
	const rows = 2
	s := startStack(t, 1, func(o *stack.Options) {
		o.SinkArgs = []string{"-hang-rate", "1", "-hang-for", "1500ms"}
		o.DispatcherArgs = []string{"-destination-timeout", "500ms", "-receiving-delay", "1s"}
	})
	operator, err := pki.Token("e2e-operator", []string{"operator"}, time.Hour)
	require.NoError(t, err)
	approver, err := pki.Token("e2e-approver", []string{"approver"}, time.Hour)
	require.NoError(t, err)
	jobID := streamFile(t, s.Ingestor.Addr, writeSample(t, rows), &spoolv1.FileHeader{FileName: "unknown.csv"}).GetJobId()
	waitJob(t, s, &spoolv1.GetJobRequest{JobId: jobID}, time.Minute, "every row UNKNOWN", func(j *spoolv1.Job) bool {
		return isFinal(j.GetState()) && j.GetUnknown() == rows
	})

	out, err := runCLIAs(t, s, operator, "resolve", "-reason", "seen in the portal", jobID, "1", "--delivered")
	require.NoError(t, err, out)
	require.Contains(t, out, "awaits approval by another person")
	// The output ends with the command that approves it.
	fields := strings.Fields(out)
	requestID := fields[len(fields)-1]
	out, err = runCLIAs(t, s, operator, "pending", jobID)
	require.NoError(t, err, out)
	require.Contains(t, out, "resolve row 1 DELIVERED")
	require.NotEmpty(t, requestID, out)
	require.Contains(t, out, requestID)

	out, err = runCLIAs(t, s, operator, "approve", requestID)
	require.Error(t, err, out)
	require.Contains(t, out, "four-eyes rule")
	entries := reportJob(t, s.Dispatchers[0].Addr, jobID).byRow(t)
	require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, entries[1].GetState(), "nothing changes without a second person")
	require.EqualValues(t, 1, sinkLedger(t, s, jobID)[1].Applied)

	out, err = runCLIAs(t, s, approver, "approve", requestID)
	require.NoError(t, err, out)
	entries = reportJob(t, s.Dispatchers[0].Addr, jobID).byRow(t)
	require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, entries[1].GetState(), "approved by a second person")
	require.Equal(t, spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, entries[2].GetState())
	require.EqualValues(t, 1, sinkLedger(t, s, jobID)[1].Applied, "a row resolved delivered is not sent again")

	out, err = runCLIAs(t, s, approver, "audit", jobID)
	require.NoError(t, err, out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.GreaterOrEqual(t, len(lines), 4, out)
	require.Contains(t, lines[1], "request resolve row 1 DELIVERED")
	require.Contains(t, lines[1], "e2e-operator")
	require.Contains(t, lines[1], "seen in the portal")
	require.Contains(t, lines[2], "approve resolve row 1 DELIVERED")
	require.Contains(t, lines[2], "PermissionDenied")
	require.Contains(t, out, "e2e-approver")
}

// TestConcurrentSubmissionsOfOneKey: two streams of one file under one
// job key start together; job writes are slowed so that both create a job
// before either claims the key. Exactly one gets the key, the other's job
// is deleted, and the rows are delivered once.
func TestConcurrentSubmissionsOfOneKey(t *testing.T) {
	const rows = 20
	var ddb *faultproxy.Proxy
	s := startStack(t, 1, func(o *stack.Options) {
		o.DispatcherArgs = []string{"-receiving-delay", "1s"}
		o.AWSEndpoint = func(kind emulator.Kind, target string) (string, error) {
			if kind != emulator.DynamoDB {
				return target, nil
			}
			var err error
			ddb, err = faultproxy.Start(faultproxy.Config{Target: target, Faults: map[string]faultproxy.Fault{
				"PutItem": {Delay: 1, DelayFor: 300 * time.Millisecond},
			}})
			if err != nil {
				return "", err
			}
			t.Cleanup(func() { _ = ddb.Close() })
			return ddb.URL(), nil
		}
	})
	file := writeSample(t, rows)
	header := &spoolv1.FileHeader{FileName: "twice.csv", JobKey: "payroll-race"}

	var wg sync.WaitGroup
	results := make([]error, 2)
	ids := make([]string, 2)
	for i := range 2 {
		client := spoolv1.NewIngestServiceClient(dial(t, s.Ingestor.Addr))
		wg.Go(func() { ids[i], results[i] = sendOnce(client, file, header) })
	}
	wg.Wait()
	var won, lost int
	var winner string
	for i, err := range results {
		if err == nil {
			won++
			winner = ids[i]
			continue
		}
		lost++
		code := status.Code(err)
		require.Contains(t, []codes.Code{codes.FailedPrecondition, codes.AlreadyExists}, code, "the loser is told: %v", err)
	}
	require.Equal(t, 1, won, "errors: %v", results)
	require.Equal(t, 1, lost)
	deletes := int64(0)
	for _, c := range ddb.Counts() {
		if c.Operation == "DeleteItem" {
			deletes += c.N
		}
	}
	require.EqualValues(t, 1, deletes, "the loser's job item was deleted")

	job := waitJob(t, s, &spoolv1.GetJobRequest{JobKey: header.GetJobKey()}, time.Minute, "the key's job completed",
		func(j *spoolv1.Job) bool { return isFinal(j.GetState()) })
	require.Equal(t, winner, job.GetJobId())
	require.Equal(t, spoolv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	requireEachRowOnce(t, s, winner, rows)
}

// sendOnce streams path in chunk mode with header and returns the job id,
// or the error that ended the stream; unlike streamFile it may run in a
// goroutine.
func sendOnce(client spoolv1.IngestServiceClient, path string, header *spoolv1.FileHeader) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := client.StreamFile(ctx)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	err = stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Header{Header: header}})
	if err == nil {
		err = stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Chunk{Chunk: b}})
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return "", err
	}
	return resp.GetJobId(), nil
}

// TestInitProvisions runs `spool init` on fresh emulators, twice: the
// first run creates the queue pair and the table, the second finds them.
// Then on emulators where an operator made the queue with other settings:
// init keeps it as it is. (A table made without the report index gets it
// added; dynalite lists a new index only some time after UpdateTable, so
// that path is left to provision's own tests.)
func TestInitProvisions(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprintf("existing=%t", existing), func(t *testing.T) {
			sqsURL, ddbURL := emutest.Start(t, emulator.SQS), emutest.Start(t, emulator.DynamoDB)
			cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("local", "local", "")}
			db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(ddbURL) })
			ctx := context.Background()
			if existing {
				q := sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(sqsURL) })
				_, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("spool"),
					Attributes: map[string]string{"VisibilityTimeout": "17"}})
				require.NoError(t, err)
			}
			env := append(os.Environ(),
				emulator.SQS.EnvEndpoint()+"="+sqsURL, emulator.DynamoDB.EnvEndpoint()+"="+ddbURL,
				"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local", "AWS_EC2_METADATA_DISABLED=true",
			)
			var outs []string
			for range 2 {
				cmd := exec.Command(filepath.Join(binDir, "spool"), "init", "-queue", "spool", "-table", "spool")
				var stderr strings.Builder
				cmd.Env, cmd.Dir, cmd.Stderr = env, t.TempDir(), &stderr
				out, err := cmd.Output()
				require.NoError(t, err, "spool init: %s%s", out, stderr.String())
				outs = append(outs, string(out))
			}
			require.Equal(t, outs[0], outs[1], "the second run finds what the first created")
			lines := strings.Split(strings.TrimSpace(outs[0]), "\n")
			require.Len(t, lines, 3, outs[0])
			require.True(t, strings.HasSuffix(lines[0], "/spool"), lines[0])
			require.True(t, strings.HasSuffix(lines[1], "/spool-dlq"), lines[1])
			require.Equal(t, "SPOOL_TABLE=spool", lines[2])
			d, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("spool")})
			require.NoError(t, err)
			var indexes []string
			for _, g := range d.Table.GlobalSecondaryIndexes {
				indexes = append(indexes, aws.ToString(g.IndexName))
			}
			require.ElementsMatch(t, []string{"ledger-by-job", "jobs-by-state"}, indexes, "the report index and the job list's")
			// The table init created says its ledger keys are namespaced,
			// so its dispatchers skip the read of former keys.
			layout, err := db.GetItem(ctx, &dynamodb.GetItemInput{
				TableName: aws.String("spool"), Key: tablelayout.Layout().Item(), ConsistentRead: aws.Bool(true),
			})
			require.NoError(t, err)
			require.Equal(t, &ddbtypes.AttributeValueMemberS{Value: tablelayout.LedgerKeysNamespaced}, layout.Item[tablelayout.LayoutLedgerKeys])
		})
	}
}
