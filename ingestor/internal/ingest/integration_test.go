package ingest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/envelope"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
)

// TestIntegrationStreamFile streams 5,000 rows through the real publisher
// and job store into local-aws-sqs and dynalite, then reads the queue dry:
// every row must be there exactly once, and the job sealed with its total.
func TestIntegrationStreamFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts emulators")
	}
	const rows = 5000
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	q := sqs.NewFromConfig(emutest.Config(emutest.Start(t, emulator.SQS)))
	db := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	queues, err := provision.EnsureQueue(ctx, q, "ingest-it-"+uuid.NewString()[:8], provision.DefaultQueueOptions)
	require.NoError(t, err)
	require.NoError(t, provision.EnsureTable(ctx, db, "jobs"))
	jobs := jobstore.New(db, "jobs")

	c, _ := startServer(t, jobs, Config{
		NewPublisher: func() (Publisher, error) {
			return publish.New(q, publish.Options{QueueURL: queues.URL, MaxMessageBytes: 256 << 10})
		},
		MaxErrors:        10,
		ProgressInterval: 100 * time.Millisecond,
	})

	stream, err := c.StreamFile(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(hdr(&spoolv1.FileHeader{FileName: "it.csv", Columns: []string{"employee", "amount"}})))
	for from := 1; from <= rows; from += 100 {
		b := &spoolv1.RowBatch{}
		for n := from; n < from+100; n++ {
			b.Rows = append(b.Rows, &spoolv1.Row{Fields: []string{"e" + strconv.Itoa(n), fmt.Sprintf("%d.00", n)}})
		}
		require.NoError(t, stream.Send(&spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Rows{Rows: b}}))
	}
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	require.EqualValues(t, rows, resp.GetRowsReceived())
	require.EqualValues(t, rows, resp.GetRowsPublished())
	require.Zero(t, resp.GetRowsRejected())

	j, err := jobs.Get(ctx, resp.GetJobId())
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, j.GetState())
	require.EqualValues(t, rows, j.GetTotal())
	require.EqualValues(t, rows, j.GetRowsPublished())
	require.Equal(t, []string{"employee", "amount"}, j.GetColumns())

	seen := drain(t, ctx, q, queues.URL, rows)
	for n := int64(1); n <= rows; n++ {
		require.Equal(t, 1, seen[n], "row %d", n)
	}
	require.Len(t, seen, rows)

	// Nothing is left behind: no duplicate waits in the queue.
	visible, inFlight, err := emutest.QueueCounts(ctx, q, queues.URL)
	require.NoError(t, err)
	require.Equal(t, "0", visible)
	require.Equal(t, "0", inFlight)
}

// drain receives and deletes messages until want distinct rows were seen,
// checking each envelope, and returns how often each row arrived.
func drain(tb testing.TB, ctx context.Context, q *sqs.Client, url string, want int) map[int64]int {
	tb.Helper()
	var mu sync.Mutex
	seen := map[int64]int{}
	distinct := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for distinct() < want && ctx.Err() == nil {
				out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
					QueueUrl: aws.String(url), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
					MessageAttributeNames: []string{"All"},
				})
				if err != nil {
					errs <- err
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				del := &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url)}
				for i, m := range out.Messages {
					e, err := envelope.Decode(aws.ToString(m.Body), m.MessageAttributes)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					seen[e.GetRow()]++
					mu.Unlock()
					del.Entries = append(del.Entries, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
				}
				if _, err := q.DeleteMessageBatch(ctx, del); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(tb, err)
	}
	require.NoError(tb, ctx.Err())
	return seen
}
