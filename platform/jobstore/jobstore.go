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
	"math/big"
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
	keyPKPrefix = "KEY#"
	keySK       = "KEY"
)

// DefaultAbortAfter is how long a RECEIVING job waits for its stream (or a
// resumed one) before whoever notices ends it ABORTED.
const DefaultAbortAfter = 2 * time.Minute

var (
	// ErrNotFound means no job has the id.
	ErrNotFound = errors.New("job not found")
	// ErrExists means a job with the id was already created.
	ErrExists = errors.New("job already exists")
	// ErrState means the job is not in the state the change requires, or
	// the change came from a stream that no longer owns the job.
	ErrState = errors.New("job is not in the required state")
	// ErrKeyTaken means a job key already names a job that is not over;
	// the error is a *KeyTakenError carrying that job.
	ErrKeyTaken = errors.New("job key already names a job")
)

// KeyTakenError is returned by Start when the job key names a job that is
// receiving, sealed or completed. Job is that job.
type KeyTakenError struct {
	Key string
	Job *spoolv1.Job
}

func (e *KeyTakenError) Error() string {
	return fmt.Sprintf("job key %q names job %s (%s)", e.Key, e.Job.GetJobId(), stateName(e.Job.GetState()))
}

// Unwrap makes errors.Is(err, ErrKeyTaken) true.
func (e *KeyTakenError) Unwrap() error { return ErrKeyTaken }

// API is the part of the DynamoDB client the store uses.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
}

// Store reads and writes job records in one table.
type Store struct {
	db         API
	table      string
	now        func() time.Time
	abortAfter time.Duration
}

// Option configures a Store.
type Option func(*Store)

// WithAbortAfter sets the lease a stream gets on its job each time it
// reports progress (DefaultAbortAfter when unset). Only the ingest side
// writes leases; readers need not set it.
func WithAbortAfter(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.abortAfter = d
		}
	}
}

// WithClock replaces time.Now, so tests can expire leases without waiting.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// New returns a store over table.
func New(db API, table string, opts ...Option) *Store {
	s := &Store{db: db, table: table, now: time.Now, abortAfter: DefaultAbortAfter}
	for _, o := range opts {
		o(s)
	}
	return s
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
	DuplicateRows int64    `dynamodbav:"duplicate_rows"`
	DeadLettered  int64    `dynamodbav:"dead_lettered"`
	Paused        bool     `dynamodbav:"paused,omitempty"`
	CreatedAt     int64    `dynamodbav:"created_at"`
	UpdatedAt     int64    `dynamodbav:"updated_at"`
	SealedAt      int64    `dynamodbav:"sealed_at,omitempty"`
	CompletedAt   int64    `dynamodbav:"completed_at,omitempty"`

	BusinessKeyColumns []string `dynamodbav:"business_key_columns,omitempty"`
	AmountColumn       string   `dynamodbav:"amount_column,omitempty"`
	Control            *totals  `dynamodbav:"control,omitempty"`
	Actual             *totals  `dynamodbav:"actual,omitempty"`

	// The stream that owns a RECEIVING job, and its lease. Every write of
	// the ingest side is conditional on the stream id, so a stream that
	// lost the job to a resumed one cannot change it any more.
	StreamID       string `dynamodbav:"stream_id,omitempty"`
	LeaseExpiresAt int64  `dynamodbav:"lease_expires_at,omitempty"`
	AbortAfterMS   int64  `dynamodbav:"abort_after_ms,omitempty"`

	// The resume checkpoint (see Checkpoint).
	ResumeRow       int64  `dynamodbav:"resume_row,omitempty"`
	ResumeOffset    int64  `dynamodbav:"resume_offset,omitempty"`
	ResumeHash      []byte `dynamodbav:"resume_hash,omitempty"`
	ResumePublished int64  `dynamodbav:"resume_published,omitempty"`
	ResumeRejected  int64  `dynamodbav:"resume_rejected,omitempty"`
	ResumeAmountSum string `dynamodbav:"resume_amount_sum,omitempty"`
}

// totals is the stored form of spoolv1.ControlTotals.
type totals struct {
	RowCount  *int64 `dynamodbav:"row_count,omitempty"`
	AmountSum string `dynamodbav:"amount_sum,omitempty"`
	SHA256    string `dynamodbav:"sha256,omitempty"`
}

func toTotals(c *spoolv1.ControlTotals) *totals {
	if c == nil || (c.RowCount == nil && c.GetAmountSum() == "" && c.GetSha256() == "") {
		return nil
	}
	return &totals{RowCount: c.RowCount, AmountSum: c.GetAmountSum(), SHA256: c.GetSha256()}
}

func (t *totals) proto() *spoolv1.ControlTotals {
	if t == nil {
		return nil
	}
	return &spoolv1.ControlTotals{RowCount: t.RowCount, AmountSum: t.AmountSum, Sha256: t.SHA256}
}

// Checkpoint is where a broken stream resumes: every data row up to Row
// was durably published or rejected, and the figures are those of rows 1 to
// Row. In chunk mode Offset is the byte offset just after row Row in the raw
// file, and HashState the marshalled SHA-256 digest of the bytes before it
// (crypto/sha256 digests implement encoding.BinaryMarshaler), so a resumed
// stream can finish the file's hash.
type Checkpoint struct {
	Row       int64
	Offset    int64
	HashState []byte
	Published int64
	Rejected  int64
	// AmountSum is the exact decimal sum of the amount column over the
	// published rows up to Row; empty when the job has no amount column.
	AmountSum string
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
		DuplicateRows:        r.DuplicateRows,
		DeadLettered:         r.DeadLettered,
		Paused:               r.Paused,
		Dropped:              r.Dropped,
		CreatedAt:            ts(r.CreatedAt),
		UpdatedAt:            ts(r.UpdatedAt),
		SealedAt:             ts(r.SealedAt),
		CompletedAt:          ts(r.CompletedAt),
		ResumeRow:            r.ResumeRow,
		ResumeOffset:         r.ResumeOffset,
		Control:              r.Control.proto(),
		Actual:               r.Actual.proto(),
		LeaseExpiresAt:       ts(r.LeaseExpiresAt),
		BusinessKeyColumns:   r.BusinessKeyColumns,
		AmountColumn:         r.AmountColumn,
	}
}

func (r *record) checkpoint() Checkpoint {
	return Checkpoint{
		Row: r.ResumeRow, Offset: r.ResumeOffset, HashState: r.ResumeHash,
		Published: r.ResumePublished, Rejected: r.ResumeRejected, AmountSum: r.ResumeAmountSum,
	}
}

func isConditionFailed(err error) bool {
	var ccf *types.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}

// Create writes a new job in state RECEIVING that no stream owns; see
// Start.
func (s *Store) Create(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	return s.Start(ctx, j, "")
}

// Start writes a new job in state RECEIVING, owned by stream, with a lease
// of the store's abort timeout. It fails with ErrExists when the id is
// taken.
//
// When the job has a key, the key is claimed after the job item is
// written, with a conditional put, so that of two concurrent submissions
// of one key exactly one gets the key. The loser's fresh job item is
// deleted and Start fails with a *KeyTakenError naming the winner's job.
// A key whose job ended ABORTED, REJECTED or CANCELLED (or whose RECEIVING
// job's lease expired) is re-pointed to the new job, conditional on the old
// job id, so a file that failed can be submitted again under its key.
func (s *Store) Start(ctx context.Context, j *spoolv1.Job, stream string) (*spoolv1.Job, error) {
	now := s.now()
	r := record{
		PK: jobPKPrefix + j.GetJobId(), SK: jobSK,
		JobID: j.GetJobId(), JobKey: j.GetJobKey(), FileName: j.GetFileName(),
		State: stateName(spoolv1.JobState_JOB_STATE_RECEIVING), Columns: j.GetColumns(),
		CreatedAt: millis(now), UpdatedAt: millis(now),
		BusinessKeyColumns: j.GetBusinessKeyColumns(), AmountColumn: j.GetAmountColumn(),
		Control: toTotals(j.GetControl()), StreamID: stream,
		LeaseExpiresAt: millis(now.Add(s.abortAfter)), AbortAfterMS: s.abortAfter.Milliseconds(),
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
	if key := j.GetJobKey(); key != "" {
		if err := s.claimKey(ctx, key, j.GetJobId()); err != nil {
			// Nothing was published for the job yet, so it can go.
			if _, derr := s.db.DeleteItem(context.WithoutCancel(ctx), &dynamodb.DeleteItemInput{
				TableName: aws.String(s.table),
				Key:       jobKey(j.GetJobId()),
			}); derr != nil {
				return nil, errors.Join(err, fmt.Errorf("delete unclaimed job %s: %w", j.GetJobId(), derr))
			}
			return nil, err
		}
	}
	return r.job(), nil
}

// claimAttempts bounds the retries of a key claim that lost a race to a
// re-pointing; each lost race means another submission made progress.
const claimAttempts = 5

func keyItem(key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrPK: str(keyPKPrefix + key),
		AttrSK: str(keySK),
	}
}

// claimKey points key at job id, unless it names a job that is not over.
func (s *Store) claimKey(ctx context.Context, key, id string) error {
	for range claimAttempts {
		item := keyItem(key)
		item["job_id"] = str(id)
		_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
			TableName:           aws.String(s.table),
			Item:                item,
			ConditionExpression: aws.String("attribute_not_exists(pk)"),
		})
		if err == nil {
			return nil
		}
		if !isConditionFailed(err) {
			return fmt.Errorf("claim job key %q: %w", key, err)
		}
		oldID, err := s.keyJobID(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		old, err := s.Get(ctx, oldID)
		if err != nil {
			return fmt.Errorf("claim job key %q: %w", key, err)
		}
		if old, err = s.ExpireIfAbandoned(ctx, old); err != nil {
			return fmt.Errorf("claim job key %q: %w", key, err)
		}
		switch old.GetState() {
		case spoolv1.JobState_JOB_STATE_ABORTED, spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED:
		default:
			return &KeyTakenError{Key: key, Job: old}
		}
		_, err = s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(s.table),
			Key:                       keyItem(key),
			UpdateExpression:          aws.String("SET job_id = :new"),
			ConditionExpression:       aws.String("job_id = :old"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":new": str(id), ":old": str(oldID)},
		})
		if err == nil {
			return nil
		}
		if !isConditionFailed(err) {
			return fmt.Errorf("re-point job key %q: %w", key, err)
		}
	}
	return fmt.Errorf("claim job key %q: lost %d races in a row: %w", key, claimAttempts, ErrState)
}

// keyJobID returns the id of the job key names, or ErrNotFound.
func (s *Store) keyJobID(ctx context.Context, key string) (string, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            keyItem(key),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("get job key %q: %w", key, err)
	}
	v, ok := out.Item["job_id"].(*types.AttributeValueMemberS)
	if !ok {
		return "", fmt.Errorf("get job key %q: %w", key, ErrNotFound)
	}
	return v.Value, nil
}

// GetByKey returns the job a job key names, or ErrNotFound.
func (s *Store) GetByKey(ctx context.Context, key string) (*spoolv1.Job, error) {
	id, err := s.keyJobID(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}

// Get returns a job, or ErrNotFound. Reads are strongly consistent, so a
// watcher never sees a counter go backwards.
func (s *Store) Get(ctx context.Context, id string) (*spoolv1.Job, error) {
	r, err := s.getRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.job(), nil
}

func (s *Store) getRecord(ctx context.Context, id string) (*record, error) {
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
	return &r, nil
}

// ExpireIfAbandoned ends j ABORTED when it is RECEIVING and its lease has
// expired: its stream broke and was not resumed in time. It returns the
// job after the change. A job that is not RECEIVING, or whose lease (as j
// has it) is still running, is returned unchanged without a read; a job
// whose stream renewed its lease meanwhile is returned as it now is.
// Dispatchers and the ingestor call it on the job they hold, so whoever
// notices first ends the job, exactly once.
func (s *Store) ExpireIfAbandoned(ctx context.Context, j *spoolv1.Job) (*spoolv1.Job, error) {
	now := s.now()
	if j.GetState() != spoolv1.JobState_JOB_STATE_RECEIVING || j.GetLeaseExpiresAt() == nil || j.GetLeaseExpiresAt().AsTime().After(now) {
		return j, nil
	}
	// The caller's copy may be stale; the reason needs the stored timeout.
	r, err := s.getRecord(ctx, j.GetJobId())
	if err != nil {
		return nil, fmt.Errorf("expire job %s: %w", j.GetJobId(), err)
	}
	if r.State != stateName(spoolv1.JobState_JOB_STATE_RECEIVING) || r.LeaseExpiresAt == 0 || r.LeaseExpiresAt > millis(now) {
		return r.job(), nil
	}
	reason := fmt.Sprintf("stream not resumed within %s", time.Duration(r.AbortAfterMS)*time.Millisecond)
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              jobKey(j.GetJobId()),
		UpdateExpression: aws.String("SET #state = :aborted, state_reason = :reason, updated_at = :now, completed_at = :now"),
		// Conditional on the very lease that was seen: a renewal or a
		// takeover in between wins.
		ConditionExpression:      aws.String("#state = :receiving AND lease_expires_at = :lease"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":aborted":   str(stateName(spoolv1.JobState_JOB_STATE_ABORTED)),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
			":reason":    str(reason),
			":now":       num(millis(now)),
			":lease":     num(r.LeaseExpiresAt),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return s.Get(ctx, j.GetJobId())
	}
	if err != nil {
		return nil, fmt.Errorf("expire job %s: %w", j.GetJobId(), err)
	}
	return unmarshalJob(out.Attributes)
}

// Takeover gives a RECEIVING job whose lease is still running to a new
// stream (a resumed one) with a fresh lease, and returns the job and its
// checkpoint. From then on the old stream's writes fail with ErrState. It
// fails with ErrState when the job is over or its lease expired.
func (s *Store) Takeover(ctx context.Context, id, stream string) (*spoolv1.Job, Checkpoint, error) {
	now := s.now()
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      jobKey(id),
		UpdateExpression:         aws.String("SET stream_id = :stream, lease_expires_at = :lease, abort_after_ms = :after, updated_at = :now"),
		ConditionExpression:      aws.String("#state = :receiving AND (attribute_not_exists(lease_expires_at) OR lease_expires_at > :now)"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":stream":    str(stream),
			":lease":     num(millis(now.Add(s.abortAfter))),
			":after":     num(s.abortAfter.Milliseconds()),
			":now":       num(millis(now)),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, Checkpoint{}, fmt.Errorf("take over job %s: %w", id, ErrState)
	}
	if err != nil {
		return nil, Checkpoint{}, fmt.Errorf("take over job %s: %w", id, err)
	}
	var r record
	if err := attributevalue.UnmarshalMap(out.Attributes, &r); err != nil {
		return nil, Checkpoint{}, fmt.Errorf("unmarshal job %s: %w", id, err)
	}
	return r.job(), r.checkpoint(), nil
}

// Ingest is what the ingestor knows about a job's stream.
type Ingest struct {
	Received, Published, Rejected int64
	// Stream is the id of the stream writing; it must still own the job.
	// Empty for a job created without one.
	Stream string
	// Checkpoint, when set, replaces the stored resume point.
	Checkpoint *Checkpoint
	// Actual are the totals the stream had; Seal compares them with the
	// declared ones.
	Actual *spoolv1.ControlTotals
}

// fence adds the condition that stream still owns the job.
func fence(cond string, values map[string]types.AttributeValue, stream string) string {
	if stream == "" {
		return cond + " AND attribute_not_exists(stream_id)"
	}
	values[":stream"] = str(stream)
	return cond + " AND stream_id = :stream"
}

// RecordIngest stores the ingest counters and the resume checkpoint of a
// job that is still RECEIVING, and renews the stream's lease. The ingestor
// calls it as publishing goes, so GetJob shows progress and a broken stream
// can be resumed. It fails with ErrState when the job is over or another
// stream took it over.
func (s *Store) RecordIngest(ctx context.Context, id string, in Ingest) error {
	now := s.now()
	set := []string{"rows_received = :rcv", "rows_published = :pub", "rows_rejected = :rej", "updated_at = :now",
		"lease_expires_at = :lease", "abort_after_ms = :after"}
	var remove []string
	values := map[string]types.AttributeValue{
		":rcv":       num(in.Received),
		":pub":       num(in.Published),
		":rej":       num(in.Rejected),
		":now":       num(millis(now)),
		":lease":     num(millis(now.Add(s.abortAfter))),
		":after":     num(s.abortAfter.Milliseconds()),
		":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
	}
	if c := in.Checkpoint; c != nil {
		set = append(set, "resume_row = :rrow", "resume_offset = :roff", "resume_published = :rpub", "resume_rejected = :rrej")
		values[":rrow"], values[":roff"] = num(c.Row), num(c.Offset)
		values[":rpub"], values[":rrej"] = num(c.Published), num(c.Rejected)
		// Empty values are removed rather than stored, so the item looks
		// the same whatever the store's support for empty attributes.
		if len(c.HashState) > 0 {
			set = append(set, "resume_hash = :rhash")
			values[":rhash"] = &types.AttributeValueMemberB{Value: c.HashState}
		} else {
			remove = append(remove, "resume_hash")
		}
		if c.AmountSum != "" {
			set = append(set, "resume_amount_sum = :rsum")
			values[":rsum"] = str(c.AmountSum)
		} else {
			remove = append(remove, "resume_amount_sum")
		}
	}
	expr := "SET " + strings.Join(set, ", ")
	if len(remove) > 0 {
		expr += " REMOVE " + strings.Join(remove, ", ")
	}
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       jobKey(id),
		UpdateExpression:          aws.String(expr),
		ConditionExpression:       aws.String(fence("#state = :receiving", values, in.Stream)),
		ExpressionAttributeNames:  map[string]string{"#state": "state"},
		ExpressionAttributeValues: values,
	})
	if isConditionFailed(err) {
		return fmt.Errorf("record ingest of job %s: %w", id, ErrState)
	}
	if err != nil {
		return fmt.Errorf("record ingest of job %s: %w", id, err)
	}
	return nil
}

// Seal ends the stream of a RECEIVING job. When the actual totals match
// every control total the job declared, the job becomes SEALED: the whole
// stream was read and every row published, so the total is final, and when
// the dispatchers already settled every row the job is completed on the
// spot. When a total does not match, the job ends REJECTED with a reason
// naming the total, declared and actual, and dispatchers deliver none of
// it; Seal returns that job without an error.
func (s *Store) Seal(ctx context.Context, id string, in Ingest) (*spoolv1.Job, error) {
	r, err := s.getRecord(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("seal job %s: %w", id, err)
	}
	if r.State != stateName(spoolv1.JobState_JOB_STATE_RECEIVING) || r.StreamID != in.Stream {
		return nil, fmt.Errorf("seal job %s: %w", id, ErrState)
	}
	now := millis(s.now())
	values := map[string]types.AttributeValue{
		":rcv":       num(in.Received),
		":pub":       num(in.Published),
		":rej":       num(in.Rejected),
		":now":       num(now),
		":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
	}
	set := "rows_received = :rcv, rows_published = :pub, rows_rejected = :rej, updated_at = :now"
	if a := toTotals(in.Actual); a != nil {
		av, err := attributevalue.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("marshal actual totals of job %s: %w", id, err)
		}
		values[":actual"] = av
		set += ", actual = :actual"
	}
	names := map[string]string{"#state": "state"}
	mismatch := CompareTotals(r.Control.proto(), in.Actual)
	if mismatch != "" {
		values[":rejected"] = str(stateName(spoolv1.JobState_JOB_STATE_REJECTED))
		values[":reason"] = str(mismatch)
		set += ", #state = :rejected, state_reason = :reason, completed_at = :now"
	} else {
		values[":sealed"] = str(stateName(spoolv1.JobState_JOB_STATE_SEALED))
		names["#total"] = "total"
		set += ", #state = :sealed, #total = :pub, sealed_at = :now"
	}
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       jobKey(id),
		UpdateExpression:          aws.String("SET " + set),
		ConditionExpression:       aws.String(fence("#state = :receiving", values, in.Stream)),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("seal job %s: %w", id, ErrState)
	}
	if err != nil {
		return nil, fmt.Errorf("seal job %s: %w", id, err)
	}
	if mismatch != "" {
		return unmarshalJob(out.Attributes)
	}
	return s.completeIfSettled(ctx, out.Attributes)
}

// CompareTotals returns why actual does not match the declared control
// totals, naming each total that differs with both figures, or "" when
// every declared total matches. Amounts compare as exact decimals, so
// "10.50" matches "10.5".
func CompareTotals(declared, actual *spoolv1.ControlTotals) string {
	if declared == nil {
		return ""
	}
	if actual == nil {
		actual = &spoolv1.ControlTotals{}
	}
	var diffs []string
	if declared.RowCount != nil && (actual.RowCount == nil || declared.GetRowCount() != actual.GetRowCount()) {
		got := "not counted"
		if actual.RowCount != nil {
			got = fmt.Sprint(actual.GetRowCount())
		}
		diffs = append(diffs, fmt.Sprintf("row_count declared %d, actual %s", declared.GetRowCount(), got))
	}
	if d := declared.GetAmountSum(); d != "" {
		want, ok1 := new(big.Rat).SetString(d)
		got, ok2 := new(big.Rat).SetString(actual.GetAmountSum())
		if !ok1 || !ok2 || want.Cmp(got) != 0 {
			a := actual.GetAmountSum()
			if a == "" {
				a = "not summed"
			}
			diffs = append(diffs, fmt.Sprintf("amount_sum declared %s, actual %s", d, a))
		}
	}
	if d := declared.GetSha256(); d != "" && !strings.EqualFold(d, actual.GetSha256()) {
		a := actual.GetSha256()
		if a == "" {
			a = "not computed (rows were sent, not raw chunks)"
		}
		diffs = append(diffs, fmt.Sprintf("sha256 declared %s, actual %s", d, a))
	}
	if len(diffs) == 0 {
		return ""
	}
	return "control totals do not match: " + strings.Join(diffs, "; ")
}

// End moves a job that is not yet final to a final state other than
// COMPLETED (ABORTED, REJECTED, CANCELLED), with the reason.
func (s *Store) End(ctx context.Context, id string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	values := map[string]types.AttributeValue{":sealed": str(stateName(spoolv1.JobState_JOB_STATE_SEALED))}
	return s.end(ctx, id, state, reason, "#state IN (:receiving, :sealed)", values)
}

// EndStream ends a RECEIVING job from its stream, like End, only while
// stream still owns it: a stream that lost its job to a resumed one must
// not end it.
func (s *Store) EndStream(ctx context.Context, id, stream string, state spoolv1.JobState, reason string) (*spoolv1.Job, error) {
	values := map[string]types.AttributeValue{}
	return s.end(ctx, id, state, reason, fence("#state = :receiving", values, stream), values)
}

func (s *Store) end(ctx context.Context, id string, state spoolv1.JobState, reason, cond string, values map[string]types.AttributeValue) (*spoolv1.Job, error) {
	values[":state"] = str(stateName(state))
	values[":reason"] = str(reason)
	values[":now"] = num(millis(s.now()))
	values[":receiving"] = str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING))
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       jobKey(id),
		UpdateExpression:          aws.String("SET #state = :state, state_reason = :reason, updated_at = :now, completed_at = :now"),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  map[string]string{"#state": "state"},
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("end job %s as %s: %w", id, stateName(state), ErrState)
	}
	if err != nil {
		return nil, fmt.Errorf("end job %s as %s: %w", id, stateName(state), err)
	}
	return unmarshalJob(out.Attributes)
}

// SetPaused pauses or resumes a RECEIVING or SEALED job and returns it.
// Pausing is a flag on the record rather than a state, because a paused
// job is still in its lifecycle: it keeps receiving, or stays sealed with
// its total, and its counters still move as deliveries under way finish.
// It fails with ErrNotFound, or ErrState when the job is over. Setting
// the flag it already has is not an error.
func (s *Store) SetPaused(ctx context.Context, id string, paused bool) (*spoolv1.Job, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      jobKey(id),
		UpdateExpression:         aws.String("SET paused = :paused, updated_at = :now"),
		ConditionExpression:      aws.String("#state IN (:receiving, :sealed)"),
		ExpressionAttributeNames: map[string]string{"#state": "state"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":paused":    &types.AttributeValueMemberBOOL{Value: paused},
			":now":       num(millis(s.now())),
			":receiving": str(stateName(spoolv1.JobState_JOB_STATE_RECEIVING)),
			":sealed":    str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	verb := "resume"
	if paused {
		verb = "pause"
	}
	if isConditionFailed(err) {
		// Either there is no such job, or it is over: tell which.
		j, gerr := s.Get(ctx, id)
		if gerr != nil {
			return nil, fmt.Errorf("%s job %s: %w", verb, id, gerr)
		}
		return j, fmt.Errorf("%s job %s, which is %s: %w", verb, id, stateName(j.GetState()), ErrState)
	}
	if err != nil {
		return nil, fmt.Errorf("%s job %s: %w", verb, id, err)
	}
	return unmarshalJob(out.Attributes)
}

// Counts are deltas of a job's delivery counters. A row is settled once
// it is Delivered, Failed (refused for good), Unknown (held for
// reconciliation) or a Duplicate (its business key is another row's
// transaction); resolving an unknown row moves one count from Unknown to
// Delivered, so deltas may be negative. A row dead-lettered after its retry
// budget is settled too (DeadLettered) until it is redriven and settles
// otherwise. Suppressed counts messages, not rows: redeliveries of rows
// already settled.
type Counts struct {
	Delivered, Failed, Retries   int64
	Unknown, Suppressed, Dropped int64
	Duplicates, DeadLettered     int64
}

// Plus returns the sum of c and d, field by field.
func (c Counts) Plus(d Counts) Counts {
	return Counts{
		Delivered: c.Delivered + d.Delivered, Failed: c.Failed + d.Failed, Retries: c.Retries + d.Retries,
		Unknown: c.Unknown + d.Unknown, Suppressed: c.Suppressed + d.Suppressed, Dropped: c.Dropped + d.Dropped,
		Duplicates: c.Duplicates + d.Duplicates, DeadLettered: c.DeadLettered + d.DeadLettered,
	}
}

// IsZero reports whether there is nothing to add.
func (c Counts) IsZero() bool { return c == Counts{} }

// Add adds c to the job's counters atomically and returns the job after the
// change. The last writer to see every row settled completes the job.
func (s *Store) Add(ctx context.Context, id string, c Counts) (*spoolv1.Job, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 jobKey(id),
		UpdateExpression:    aws.String("ADD delivered :d, failed :f, retries :r, #unknown :u, duplicates_suppressed :s, dropped :x, duplicate_rows :dup, dead_lettered :dl SET updated_at = :now"),
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
			":dup": num(c.Duplicates),
			":dl":  num(c.DeadLettered),
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
	if j.GetState() != spoolv1.JobState_JOB_STATE_SEALED || SettledOf(j).Sum() < j.GetTotal() {
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
