// Package openjobs is the register, shared by every dispatcher, of the jobs
// whose counters may still need a repair from the delivery ledger.
//
// A dispatcher killed between a ledger write and its next counter flush
// loses what it counted since its last write, and only a counter repair
// (package recount) brings the job's counters back to what the ledger
// holds. A repairer kept
// the jobs to look at in memory only, so once every dispatcher that had
// worked on a job was killed and restarted, and the job's messages were all
// gone, no process knew of the job any more, and a job whose counts were
// lost stayed SEALED for ever. The register lives in the job table instead:
// a dispatcher marks a job open when it works on it, every repairer reads
// the register, and a repairer unmarks a job only once it is final and its
// counters agree with the ledger.
package openjobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// attrMarked is when the job was last marked, Unix ms. The job id lives in
// the sort key only (tablelayout.Open): an attribute named job_id would put
// the item in the ledger's index. The register's one partition holds an
// item per open job, a few hundred at most, read by one query per repair
// interval per dispatcher.
const attrMarked = "marked_at"

// ErrMarked means the job was marked again after the cutoff: a dispatcher
// is working on it, so it stays open.
var ErrMarked = errors.New("job marked open again")

// API is the part of the DynamoDB client the register uses.
type API interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// Register is the register in a job table that provision.EnsureTable made.
type Register struct {
	db    API
	table string
	now   func() time.Time
}

// New returns the register in table; now is the clock (time.Now when nil).
func New(db API, table string, now func() time.Time) *Register {
	if now == nil {
		now = time.Now
	}
	return &Register{db: db, table: table, now: now}
}

// Mark records that the job is open, now.
func (r *Register) Mark(ctx context.Context, jobID string) error {
	item := tablelayout.Open(jobID).Item()
	item[attrMarked] = &types.AttributeValueMemberN{Value: strconv.FormatInt(r.now().UnixMilli(), 10)}
	if _, err := r.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(r.table), Item: item}); err != nil {
		return fmt.Errorf("mark job %s open: %w", jobID, err)
	}
	return nil
}

// List returns the ids of the open jobs.
func (r *Register) List(ctx context.Context) ([]string, error) {
	var ids []string
	p := dynamodb.NewQueryPaginator(r.db, &dynamodb.QueryInput{
		TableName:                 aws.String(r.table),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": tablelayout.PK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: tablelayout.OpenPartition}},
		ConsistentRead:            aws.Bool(true),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list open jobs: %w", err)
		}
		for _, it := range out.Items {
			if sk, ok := it[tablelayout.SK].(*types.AttributeValueMemberS); ok {
				ids = append(ids, tablelayout.OpenJobID(sk.Value))
			}
		}
	}
	return ids, nil
}

// Unmark removes the job from the register unless it was marked after
// cutoff (ErrMarked): a dispatcher that marked it since may hold counts
// of it.
func (r *Register) Unmark(ctx context.Context, jobID string, cutoff time.Time) error {
	_, err := r.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(r.table),
		Key:                       tablelayout.Open(jobID).Item(),
		ConditionExpression:       aws.String("attribute_not_exists(#m) OR #m <= :cutoff"),
		ExpressionAttributeNames:  map[string]string{"#m": attrMarked},
		ExpressionAttributeValues: map[string]types.AttributeValue{":cutoff": &types.AttributeValueMemberN{Value: strconv.FormatInt(cutoff.UnixMilli(), 10)}},
	})
	if condwrite.Failed(err) {
		return fmt.Errorf("unmark job %s: %w", jobID, ErrMarked)
	}
	if err != nil {
		return fmt.Errorf("unmark job %s: %w", jobID, err)
	}
	return nil
}
