package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// callTimeout bounds every DynamoDB call of the ledger, the SDK's own
// retries included: a hung connection must not hold a delivery (or a
// claim's lease) hostage. A call that times out is one whose fate is
// unknown, which the write protocol handles by sending it again.
const callTimeout = 5 * time.Second

// API is the part of the DynamoDB client the ledger uses.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// Dynamo is the Backend on DynamoDB: one item per transaction in the job
// table, pk TX#<transaction key>, sk TX, found per job through the
// tablelayout.LedgerIndex index on (job_id, row).
type Dynamo struct {
	db    API
	table string
	// noOld is set once the endpoint refused
	// ReturnValuesOnConditionCheckFailure; the ledger then reads the record
	// after a failed condition instead.
	noOld atomic.Bool
}

// NewDynamo returns a backend over table, which provision.EnsureTable made.
func NewDynamo(db API, table string) *Dynamo { return &Dynamo{db: db, table: table} }

// item is a record as stored.
type item struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	JobID       string `dynamodbav:"job_id"`
	Row         int64  `dynamodbav:"row"`
	TxKey       string `dynamodbav:"tx_key"`
	State       string `dynamodbav:"state"`
	Owner       string `dynamodbav:"owner"`
	LeaseUntil  int64  `dynamodbav:"lease_until"`
	Fence       int64  `dynamodbav:"fence"`
	Version     int64  `dynamodbav:"version"`
	Write       uint64 `dynamodbav:"write_id,omitempty"`
	Attempts    int32  `dynamodbav:"attempts"`
	LastStatus  int32  `dynamodbav:"last_status"`
	Reason      string `dynamodbav:"reason,omitempty"`
	BusinessKey string `dynamodbav:"business_key,omitempty"`
	Amount      string `dynamodbav:"amount,omitempty"`
	UpdatedAt   int64  `dynamodbav:"updated_at"`
	Counted     bool   `dynamodbav:"counted_unknown,omitempty"`
	Resend      bool   `dynamodbav:"resend,omitempty"`
	Dead        bool   `dynamodbav:"dead_lettered,omitempty"`
	Envelope    []byte `dynamodbav:"envelope,omitempty"`
	DupJobID    string `dynamodbav:"dup_job_id,omitempty"`
	DupRow      int64  `dynamodbav:"dup_row,omitempty"`
	// ExpiresAt is the table's time-to-live attribute
	// (tablelayout.ExpiresAt).
	ExpiresAt int64 `dynamodbav:"expires_at,omitempty"`
	// Who resolved the row by hand (Record.Resolved).
	ResolvedBy        string `dynamodbav:"resolved_by,omitempty"`
	ApprovedBy        string `dynamodbav:"approved_by,omitempty"`
	ResolutionRequest string `dynamodbav:"resolution_request,omitempty"`
	Reference         string `dynamodbav:"reference,omitempty"`
	RefTruncated      bool   `dynamodbav:"reference_truncated,omitempty"`
}

func toItem(r Record) item {
	return item{
		PK: tablelayout.Tx(r.Key).PK, SK: tablelayout.Tx(r.Key).SK, JobID: r.JobID, Row: r.Row, TxKey: r.Key, State: StateName(r.State),
		Owner: r.Owner, LeaseUntil: r.LeaseUntil, Fence: r.Fence, Version: r.Version, Write: r.Write, Attempts: r.Attempts,
		LastStatus: r.LastStatus, Reason: r.Reason, BusinessKey: r.BusinessKey, Amount: r.Amount,
		UpdatedAt: r.UpdatedAt, Counted: r.Counted, Resend: r.Resend, Dead: r.Dead, Envelope: r.Envelope,
		DupJobID: r.DupJobID, DupRow: r.DupRow, ExpiresAt: r.ExpiresAt,
		ResolvedBy: r.Resolved.By, ApprovedBy: r.Resolved.ApprovedBy, ResolutionRequest: r.Resolved.Request,
		Reference: r.Reference, RefTruncated: r.RefTruncated,
	}
}

func (it item) record() Record {
	return Record{
		Key: it.TxKey, JobID: it.JobID, Row: it.Row, State: parseState(it.State), Owner: it.Owner,
		LeaseUntil: it.LeaseUntil, Fence: it.Fence, Version: it.Version, Write: it.Write, Attempts: it.Attempts,
		LastStatus: it.LastStatus, Reason: it.Reason, BusinessKey: it.BusinessKey, Amount: it.Amount,
		UpdatedAt: it.UpdatedAt, Counted: it.Counted, Resend: it.Resend, Dead: it.Dead, Envelope: it.Envelope,
		DupJobID: it.DupJobID, DupRow: it.DupRow, ExpiresAt: it.ExpiresAt,
		Resolved:  Resolver{By: it.ResolvedBy, ApprovedBy: it.ApprovedBy, Request: it.ResolutionRequest},
		Reference: it.Reference, RefTruncated: it.RefTruncated,
	}
}

func unmarshal(m map[string]types.AttributeValue) (Record, error) {
	var it item
	if err := attributevalue.UnmarshalMap(m, &it); err != nil {
		return Record{}, fmt.Errorf("unmarshal ledger item: %w", err)
	}
	return it.record(), nil
}

// Get implements Backend.
func (d *Dynamo) Get(ctx context.Context, key string) (Record, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out, err := d.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(d.table),
		Key:            tablelayout.Tx(key).Item(),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("get ledger item %s: %w", key, err)
	}
	if len(out.Item) == 0 {
		return Record{}, false, nil
	}
	r, err := unmarshal(out.Item)
	return r, err == nil, err
}

// Create implements Backend.
func (d *Dynamo) Create(ctx context.Context, r Record) error {
	return d.put(ctx, r, "attribute_not_exists(pk)", nil)
}

// Replace implements Backend.
func (d *Dynamo) Replace(ctx context.Context, prev int64, next Record) error {
	return d.put(ctx, next, "#version = :prev", map[string]types.AttributeValue{
		":prev": &types.AttributeValueMemberN{Value: strconv.FormatInt(prev, 10)},
	})
}

func (d *Dynamo) put(ctx context.Context, r Record, cond string, values map[string]types.AttributeValue) error {
	av, err := attributevalue.MarshalMap(toItem(r))
	if err != nil {
		return fmt.Errorf("marshal ledger item %s: %w", r.Key, err)
	}
	in := &dynamodb.PutItemInput{
		TableName:                 aws.String(d.table),
		Item:                      av,
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeValues: values,
	}
	if values != nil {
		in.ExpressionAttributeNames = map[string]string{"#version": "version"}
	}
	// The item that made the condition fail comes back with the failure,
	// on AWS and DynamoDB Local, at no extra cost: the ledger then knows at
	// once whether it was its own write, without a read.
	if !d.noOld.Load() {
		in.ReturnValuesOnConditionCheckFailure = types.ReturnValuesOnConditionCheckFailureAllOld
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err = d.db.PutItem(ctx, in)
	if in.ReturnValuesOnConditionCheckFailure != "" && refusedReturnValues(err) {
		// Refused as invalid, so not applied: the same write goes again
		// without the parameter.
		d.noOld.Store(true)
		in.ReturnValuesOnConditionCheckFailure = ""
		_, err = d.db.PutItem(ctx, in)
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		if len(ccf.Item) == 0 {
			return ErrConflict
		}
		cur, uerr := unmarshal(ccf.Item)
		if uerr != nil {
			return ErrConflict
		}
		return &Conflict{Current: cur}
	}
	if err != nil {
		return fmt.Errorf("put ledger item %s: %w", r.Key, err)
	}
	return nil
}

// refusedReturnValues says the endpoint rejected
// ReturnValuesOnConditionCheckFailure as a parameter it does not know.
func refusedReturnValues(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "ValidationException" &&
		strings.Contains(ae.ErrorMessage(), "ReturnValuesOnConditionCheckFailure")
}

// ByJob implements Backend. The filter on state is applied by DynamoDB
// after reading each page, so every state costs one pass over the job's
// index entries; a report is rare, and this keeps memory flat.
func (d *Dynamo) ByJob(ctx context.Context, jobID string, state spoolv1.TransactionState, fn func(Record) error) error {
	return d.query(ctx, &dynamodb.QueryInput{
		FilterExpression:         aws.String("#state = :state"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":state": &types.AttributeValueMemberS{Value: StateName(state)},
		},
	}, jobID, fn)
}

// markAttributes are the item attributes a Mark is read from (their names
// are item's tags).
var markAttributes = []string{"state", "counted_unknown", "dead_lettered", "updated_at"}

// Marks implements Backend: one pass over the job's index entries, each
// projected to a Mark's attributes. A projection costs the same read units
// on AWS (they are counted on whole entries) but moves an eighth of the
// bytes, and halves a count's time on the local emulator
// (BenchmarkLedgerCount).
func (d *Dynamo) Marks(ctx context.Context, jobID string, fn func(Mark) error) error {
	names := map[string]string{}
	projection := make([]string, len(markAttributes))
	for i, a := range markAttributes {
		// Placeholders for all of them: "state" is a reserved word.
		projection[i] = "#p" + strconv.Itoa(i)
		names[projection[i]] = a
	}
	in := &dynamodb.QueryInput{ProjectionExpression: aws.String(strings.Join(projection, ", ")), ExpressionAttributeNames: names}
	return d.query(ctx, in, jobID, func(r Record) error { return fn(markOf(r)) })
}

// query runs in over the job's entries of the ledger index, page by page,
// and calls fn for each. in brings what narrows the query (a filter, a
// projection, their names and values); query adds the table, the index
// and the job's key condition.
func (d *Dynamo) query(ctx context.Context, in *dynamodb.QueryInput, jobID string, fn func(Record) error) error {
	in.TableName = aws.String(d.table)
	in.IndexName = aws.String(tablelayout.LedgerIndex)
	in.KeyConditionExpression = aws.String("#job = :job")
	if in.ExpressionAttributeNames == nil {
		in.ExpressionAttributeNames = map[string]string{}
	}
	in.ExpressionAttributeNames["#job"] = tablelayout.LedgerIndexPK
	if in.ExpressionAttributeValues == nil {
		in.ExpressionAttributeValues = map[string]types.AttributeValue{}
	}
	in.ExpressionAttributeValues[":job"] = &types.AttributeValueMemberS{Value: jobID}
	p := dynamodb.NewQueryPaginator(d.db, in)
	for p.HasMorePages() {
		out, err := d.page(ctx, p)
		if err != nil {
			return fmt.Errorf("query ledger of job %s: %w", jobID, err)
		}
		for _, m := range out.Items {
			r, err := unmarshal(m)
			if err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// page reads the next page within callTimeout: a report may take long,
// each of its calls may not.
func (d *Dynamo) page(ctx context.Context, p *dynamodb.QueryPaginator) (*dynamodb.QueryOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return p.NextPage(ctx)
}

// Find implements Backend.
func (d *Dynamo) Find(ctx context.Context, jobID string, row int64) (Record, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out, err := d.db.Query(ctx, &dynamodb.QueryInput{
		TableName:              aws.String(d.table),
		IndexName:              aws.String(tablelayout.LedgerIndex),
		KeyConditionExpression: aws.String("#job = :job AND #row = :row"),
		ExpressionAttributeNames: map[string]string{
			"#job": tablelayout.LedgerIndexPK, "#row": tablelayout.LedgerIndexSK,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":job": &types.AttributeValueMemberS{Value: jobID},
			":row": &types.AttributeValueMemberN{Value: strconv.FormatInt(row, 10)},
		},
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("find row %d of job %s: %w", row, jobID, err)
	}
	if len(out.Items) == 0 {
		return Record{}, false, nil
	}
	r, err := unmarshal(out.Items[0])
	return r, err == nil, err
}
