package jobstore_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/emulator/emutest"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/provision"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// counter is one writer's cumulative counts of a job, as a dispatcher's
// tally keeps them.
type counter struct {
	s       *jobstore.Store
	job     string
	writer  string
	version int64
	counts  jobstore.Counts
}

func newCounter(s *jobstore.Store, job, writer string) *counter {
	return &counter{s: s, job: job, writer: writer}
}

// add counts d and writes the writer's counts.
func (c *counter) add(t testing.TB, d jobstore.Counts) {
	t.Helper()
	c.counts = c.counts.Plus(d)
	require.NoError(t, c.write())
}

// write writes the counts as the next version.
func (c *counter) write() error {
	c.version++
	return c.s.WriteCounts(context.Background(), c.job, jobstore.CounterWrite{Writer: c.writer, Version: c.version, Counts: c.counts})
}

// TestCountsOnTheRecordStillCount: dispatchers of the previous version
// added to counters on the job record; during a rolling deploy both kinds
// write, and a read sums them.
func TestCountsOnTheRecordStillCount(t *testing.T) {
	ctx := context.Background()
	raw := dynamodb.NewFromConfig(emutest.Config(emutest.Start(t, emulator.DynamoDB)))
	require.NoError(t, provision.EnsureTable(ctx, raw, "jobs"))
	s := jobstore.New(raw, "jobs")
	_, err := s.Create(ctx, &spoolv1.Job{JobId: "j"})
	require.NoError(t, err)
	_, err = s.Seal(ctx, "j", jobstore.Ingest{Received: 5, Published: 5})
	require.NoError(t, err)
	_, err = raw.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String("jobs"),
		Key:                       tablelayout.Job("j").Item(),
		UpdateExpression:          aws.String("ADD delivered :d, retries :r"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":d": &types.AttributeValueMemberN{Value: "2"}, ":r": &types.AttributeValueMemberN{Value: "1"}},
	})
	require.NoError(t, err)
	newCounter(s, "j", "d1").add(t, jobstore.Counts{Delivered: 3, Retries: 1})
	j, err := s.Get(ctx, "j")
	require.NoError(t, err)
	require.EqualValues(t, 5, j.GetDelivered())
	require.EqualValues(t, 2, j.GetRetries())
}
