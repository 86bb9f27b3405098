// Package jobstore keeps the job record: one DynamoDB item per submitted
// file, shared by the ingestor (which creates and seals it) and every
// dispatcher (which adds to its counters and completes it).
//
// All changes are single-item conditional writes or atomic ADDs, so any
// number of processes can update one job without coordination, and the
// design runs unchanged on DynamoDB and on emulators without transactions.
package jobstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Key attribute names of the table. The table is shared by every kind of
// item Spool keeps (jobs now; job keys and the delivery ledger later), so
// keys are generic and typed by prefix.
const (
	AttrPK = "pk"
	AttrSK = "sk"
)

const (
	jobPKPrefix = "JOB#"
	jobSK       = "JOB"
)

var (
	// ErrNotFound means no job has the id.
	ErrNotFound = errors.New("job not found")
	// ErrExists means a job with the id was already created.
	ErrExists = errors.New("job already exists")
	// ErrState means the job is not in the state the change requires.
	ErrState = errors.New("job is not in the required state")
)

// API is the part of the DynamoDB client the store uses.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
}

// Store reads and writes job records in one table.
type Store struct {
	db    API
	table string
	now   func() time.Time
}

// New returns a store over table.
func New(db API, table string) *Store {
	return &Store{db: db, table: table, now: time.Now}
}

// record is the item as stored. Times are Unix milliseconds.
type record struct {
	PK            string   `dynamodbav:"pk"`
	SK            string   `dynamodbav:"sk"`
	JobID         string   `dynamodbav:"job_id"`
	JobKey        string   `dynamodbav:"job_key,omitempty"`
	FileName      string   `dynamodbav:"file_name,omitempty"`
	State         string   `dynamodbav:"state"`
	StateReason   string   `dynamodbav:"state_reason,omitempty"`
	Columns       []string `dynamodbav:"columns,omitempty"`
	RowsReceived  int64    `dynamodbav:"rows_received"`
	RowsPublished int64    `dynamodbav:"rows_published"`
	RowsRejected  int64    `dynamodbav:"rows_rejected"`
	Total         int64    `dynamodbav:"total"`
	Delivered     int64    `dynamodbav:"delivered"`
	Failed        int64    `dynamodbav:"failed"`
	Retries       int64    `dynamodbav:"retries"`
	Unknown       int64    `dynamodbav:"unknown"`
	Suppressed    int64    `dynamodbav:"duplicates_suppressed"`
	Dropped       int64    `dynamodbav:"dropped"`
	CreatedAt     int64    `dynamodbav:"created_at"`
	UpdatedAt     int64    `dynamodbav:"updated_at"`
	SealedAt      int64    `dynamodbav:"sealed_at,omitempty"`
	CompletedAt   int64    `dynamodbav:"completed_at,omitempty"`
}

func jobKey(id string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrPK: &types.AttributeValueMemberS{Value: jobPKPrefix + id},
		AttrSK: &types.AttributeValueMemberS{Value: jobSK},
	}
}

// stateName is the stored form of a state: the enum name without prefix.
func stateName(s spoolv1.JobState) string {
	return strings.TrimPrefix(s.String(), "JOB_STATE_")
}

func parseState(s string) spoolv1.JobState {
	return spoolv1.JobState(spoolv1.JobState_value["JOB_STATE_"+s])
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func ts(ms int64) *timestamppb.Timestamp {
	if ms == 0 {
		return nil
	}
	return timestamppb.New(time.UnixMilli(ms))
}

func (r *record) job() *spoolv1.Job {
	return &spoolv1.Job{
		JobId:                r.JobID,
		JobKey:               r.JobKey,
		FileName:             r.FileName,
		State:                parseState(r.State),
		StateReason:          r.StateReason,
		Columns:              r.Columns,
		RowsReceived:         r.RowsReceived,
		RowsPublished:        r.RowsPublished,
		RowsRejected:         r.RowsRejected,
		Total:                r.Total,
		Delivered:            r.Delivered,
		Failed:               r.Failed,
		Retries:              r.Retries,
		Unknown:              r.Unknown,
		DuplicatesSuppressed: r.Suppressed,
		Dropped:              r.Dropped,
		CreatedAt:            ts(r.CreatedAt),
		UpdatedAt:            ts(r.UpdatedAt),
		SealedAt:             ts(r.SealedAt),
		CompletedAt:          ts(r.CompletedAt),
	}
}

func isConditionFailed(err error) bool {
	var ccf *types.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}

// Create writes a new job in state RECEIVING. It fails with ErrExists when
// the id is taken.
func (s *Store) Create(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	now := millis(s.now())
	r := record{
		PK: jobPKPrefix + j.GetJobId(), SK: jobSK,
		JobID: j.GetJobId(), JobKey: j.GetJobKey(), FileName: j.GetFileName(),
		State: stateName(spoolv1.JobState_JOB_STATE_RECEIVING), Columns: j.GetColumns(),
		CreatedAt: now, UpdatedAt: now,
	}
	item, err := attributevalue.MarshalMap(r)
	if err != nil {
		return nil, fmt.Errorf("marshal job %s: %w", j.GetJobId(), err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           aws.String(s.table),
		Item:                item,
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("create job %s: %w", j.GetJobId(), ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("create job %s: %w", j.GetJobId(), err)
	}
	return r.job(), nil
}

// Get returns a job, or ErrNotFound. Reads are strongly consistent, so a
// watcher never sees a counter go backwards.
func (s *Store) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            jobKey(id),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	if len(out.Item) == 0 {
		return nil, fmt.Errorf("get job %s: %w", id, ErrNotFound)
	}
	var r record
	if err := attributevalue.UnmarshalMap(out.Item, &r); err != nil {
		return nil, fmt.Errorf("unmarshal job %s: %w", id, err)
	}
	return r.job(), nil
}

// Ingest is what the ingestor knows about a job's stream.
type Ingest struct {
	Received, Published, Rejected int64
}

// RecordIngest stores the ingest counters of a job that is still
// RECEIVING. The ingestor calls it as publishing goes, so GetJob shows
// progress and the published figure can serve a resumed stream.
func (s *Store) RecordIngest(ctx context.Context, id string, in Ingest) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      jobKey(id),
		UpdateExpression:         aws.String("SET rows_received = :rcv, rows_published = :pub, rows_rejected = :rej, updated_at = :now"),
		ConditionExpression:      aws.String("#state = :receiving"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":rcv":       num(in.Received),
			":pub":       num(in.Published),
			":rej":       num(in.Rejected),
			":now":       num(millis(s.now())),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
		},
	})
	if isConditionFailed(err) {
		return fmt.Errorf("record ingest of job %s: %w", id, ErrState)
	}
	if err != nil {
		return fmt.Errorf("record ingest of job %s: %w", id, err)
	}
	return nil
}

// Seal marks a RECEIVING job SEALED: the whole stream was read and every
// row published, so the total is final. When the dispatchers already
// settled every row, the job is completed on the spot.
func (s *Store) Seal(ctx context.Context, id string, in Ingest) (*spoolv1.Job, error) {
	now := millis(s.now())
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      jobKey(id),
		UpdateExpression:         aws.String("SET #state = :sealed, #total = :pub, rows_received = :rcv, rows_published = :pub, rows_rejected = :rej, sealed_at = :now, updated_at = :now"),
		ConditionExpression:      aws.String("#state = :receiving"),
		ExpressionAttributeNames: map[string]string{"#state": "state", "#total": "total"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":rcv":       num(in.Received),
			":pub":       num(in.Published),
			":rej":       num(in.Rejected),
			":now":       num(now),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("seal job %s: %w", id, ErrState)
	}
	if err != nil {
		return nil, fmt.Errorf("seal job %s: %w", id, err)
	}
	return s.completeIfSettled(ctx, out.Attributes)
}

// End moves a job that is not yet final to a final state other than
// COMPLETED (ABORTED, REJECTED, CANCELLED), with the reason.
func (s *Store) End(ctx context.Context, id string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      jobKey(id),
		UpdateExpression:         aws.String("SET #state = :state, state_reason = :reason, updated_at = :now, completed_at = :now"),
		ConditionExpression:      aws.String("#state IN (:receiving, :sealed)"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":state":     str(stateName(state)),
			":reason":    str(reason),
			":now":       num(millis(s.now())),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("end job %s as %s: %w", id, stateName(state), ErrState)
	}
	if err != nil {
		return nil, fmt.Errorf("end job %s as %s: %w", id, stateName(state), err)
	}
	return unmarshalJob(out.Attributes)
}

// Counts are deltas of a job's delivery counters. A row is settled once
// it is Delivered, Failed (refused for good) or Unknown (held for
// reconciliation); resolving an unknown row moves one count from Unknown
// to Delivered, so deltas may be negative.
type Counts struct {
	Delivered, Failed, Retries   int64
	Unknown, Suppressed, Dropped int64
}

// Settled is how many rows the deltas settle.
func (c Counts) Settled() int64 { return c.Delivered + c.Failed + c.Unknown }

// IsZero reports whether there is nothing to add.
func (c Counts) IsZero() bool { return c == Counts{} }

// Add adds c to the job's counters atomically and returns the job after the
// change. The last writer to see every row settled completes the job.
func (s *Store) Add(ctx context.Context, id string, c Counts) (*spoolv1.Job, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 jobKey(id),
		UpdateExpression:    aws.String("ADD delivered :d, failed :f, retries :r, #unknown :u, duplicates_suppressed :s, dropped :x SET updated_at = :now"),
		ConditionExpression: aws.String("attribute_exists(pk)"),
		// UNKNOWN is a DynamoDB reserved word.
		ExpressionAttributeNames: map[string]string{"#unknown": "unknown"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":d":   num(c.Delivered),
			":f":   num(c.Failed),
			":r":   num(c.Retries),
			":u":   num(c.Unknown),
			":s":   num(c.Suppressed),
			":x":   num(c.Dropped),
			":now": num(millis(s.now())),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("add counts to job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("add counts to job %s: %w", id, err)
	}
	return s.completeIfSettled(ctx, out.Attributes)
}

// completeIfSettled completes a SEALED job whose rows are all settled.
// Updates of one item are serialised, so whichever of Seal and the last Add
// comes second sees the final figures; the condition makes completing
// idempotent when both do.
func (s *Store) completeIfSettled(ctx context.Context, item map[string]types.AttributeValue) (*spoolv1.Job, error) {
	j, err := unmarshalJob(item)
	if err != nil {
		return nil, err
	}
	settled := j.GetDelivered() + j.GetFailed() + j.GetUnknown()
	if j.GetState() != spoolv1.JobState_JOB_STATE_SEALED || settled < j.GetTotal() {
		return j, nil
	}
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      jobKey(j.GetJobId()),
		UpdateExpression:         aws.String("SET #state = :completed, completed_at = :now, updated_at = :now"),
		ConditionExpression:      aws.String("#state = :sealed"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":completed": str(stateName(spoolv1.JobState_JOB_STATE_COMPLETED)),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
			":now":       num(millis(s.now())),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		// Another writer completed it first.
		return s.Get(ctx, j.GetJobId())
	}
	if err != nil {
		return nil, fmt.Errorf("complete job %s: %w", j.GetJobId(), err)
	}
	return unmarshalJob(out.Attributes)
}

func unmarshalJob(item map[string]types.AttributeValue) (*spoolv1.Job, error) {
	var r record
	if err := attributevalue.UnmarshalMap(item, &r); err != nil {
		return nil, fmt.Errorf("unmarshal job: %w", err)
	}
	return r.job(), nil
}

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: fmt.Sprint(n)}
}

func str(s string) types.AttributeValue {
	return &types.AttributeValueMemberS{Value: s}
}
