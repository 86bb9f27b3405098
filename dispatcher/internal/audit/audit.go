// Package audit keeps what operators did to jobs, and the four-eyes
// requests that wait for a second person, durably in the job table
// (tablelayout.AuditEvent, tablelayout.Request).
//
// The order of steps is what makes the trail trustworthy: an event is
// written before its action, with no outcome, and completed with the
// outcome after (Begin, then the action, then Finish). An action whose
// event cannot be written is not taken; a dispatcher that dies between
// the two leaves an event without an outcome, which says "this was
// attempted, look at the job" — never an action without its event.
//
// A four-eyes request moves PENDING → APPROVED → APPLIED (or FAILED), each
// step one conditional write, so that two approvals racing, or an approval
// sent again after its answer was lost, apply the action once.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// callTimeout bounds every DynamoDB call, the SDK's retries included.
const callTimeout = 5 * time.Second

// API is the part of the DynamoDB client the audit trail uses.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// Store is the audit trail and the four-eyes requests in one table.
type Store struct {
	db    API
	table string
	now   func() time.Time
}

// New returns a store over table; now is the clock (time.Now when nil).
func New(db API, table string, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, table: table, now: now}
}

// Event is one operator action on a job.
type Event struct {
	JobID           string
	ID              string
	At              time.Time
	Action          spoolv1.OperatorAction
	Actor           string
	Reason          string
	ApprovedBy      string
	RequestID       string
	Row             int64
	Resolution      spoolv1.Resolution
	RequestedAction spoolv1.OperatorAction
	// Detail says what an UPDATE asked to change.
	Detail    string
	Outcome   string
	OutcomeAt time.Time
}

// eventItem is an event as stored. Its job and row are not named job_id
// and row: those are the ledger index's keys, which only ledger records
// may carry.
type eventItem struct {
	PK              string `dynamodbav:"pk"`
	SK              string `dynamodbav:"sk"`
	JobID           string `dynamodbav:"job"`
	ID              string `dynamodbav:"event_id"`
	At              int64  `dynamodbav:"at"`
	Action          string `dynamodbav:"action"`
	Actor           string `dynamodbav:"actor"`
	Reason          string `dynamodbav:"reason,omitempty"`
	ApprovedBy      string `dynamodbav:"approved_by,omitempty"`
	RequestID       string `dynamodbav:"request_id,omitempty"`
	Row             int64  `dynamodbav:"target_row,omitempty"`
	Resolution      string `dynamodbav:"resolution,omitempty"`
	RequestedAction string `dynamodbav:"requested_action,omitempty"`
	Detail          string `dynamodbav:"detail,omitempty"`
	Outcome         string `dynamodbav:"outcome,omitempty"`
	OutcomeAt       int64  `dynamodbav:"outcome_at,omitempty"`
}

// Begin writes e before its action is taken, with no outcome, and returns
// it with its id and time set. An event with an id already set (one a
// retried call derives from its request) that exists is returned as
// stored, so a retry never writes a second event for one action.
func (s *Store) Begin(ctx context.Context, e Event) (Event, error) {
	if e.JobID == "" {
		return Event{}, errors.New("audit event without a job")
	}
	if e.ID == "" {
		e.ID = newID()
	}
	if e.At.IsZero() {
		e.At = s.now()
	}
	e.Outcome, e.OutcomeAt = "", time.Time{}
	exists, err := s.putNew(ctx, toEventItem(e))
	if exists {
		// Written already: by this call before a lost answer, or by an
		// earlier attempt of the same approval.
		return s.getEvent(ctx, tablelayout.AuditEvent(e.JobID, e.At.UnixMilli(), e.ID))
	}
	if err != nil {
		return Event{}, fmt.Errorf("write audit event of job %s: %w", e.JobID, err)
	}
	return e, nil
}

// putNew writes item unless an item with its key is stored already, and
// says whether one was: both kinds of record are written once, and a
// retry finds the first write instead of making a second.
func (s *Store) putNew(ctx context.Context, item any) (exists bool, err error) {
	av, err := attributevalue.MarshalMap(item)
	if err != nil {
		return false, fmt.Errorf("marshal: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return condwrite.PutNew(ctx, s.db, s.table, av)
}

// Finish records the outcome of e's action: "ok", or the error. An
// outcome recorded already is kept.
func (s *Store) Finish(ctx context.Context, e Event, actionErr error) error {
	outcome := "ok"
	if actionErr != nil {
		outcome = actionErr.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 tablelayout.AuditEvent(e.JobID, e.At.UnixMilli(), e.ID).Item(),
		UpdateExpression:    aws.String("SET outcome = :o, outcome_at = :t"),
		ConditionExpression: aws.String("attribute_exists(pk) AND attribute_not_exists(outcome)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":o": &types.AttributeValueMemberS{Value: outcome},
			":t": &types.AttributeValueMemberN{Value: fmt.Sprint(s.now().UnixMilli())},
		},
	})
	if err != nil && !condwrite.Failed(err) {
		return fmt.Errorf("record outcome of audit event %s of job %s: %w", e.ID, e.JobID, err)
	}
	return nil
}

func (s *Store) getEvent(ctx context.Context, k tablelayout.Key) (Event, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: k.Item(), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return Event{}, fmt.Errorf("read audit event %s: %w", k.SK, err)
	}
	if len(out.Item) == 0 {
		return Event{}, fmt.Errorf("audit event %s vanished", k.SK)
	}
	var it eventItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
		return Event{}, fmt.Errorf("unmarshal audit event %s: %w", k.SK, err)
	}
	return it.event(), nil
}

// List returns up to limit events of the job, oldest first, from the page
// token of a previous call (empty for the first page), and the token of
// the next page (empty after the last).
func (s *Store) List(ctx context.Context, jobID string, limit int32, token string) ([]Event, string, error) {
	in := &dynamodb.QueryInput{
		TableName:              aws.String(s.table),
		KeyConditionExpression: aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": &types.AttributeValueMemberS{Value: tablelayout.AuditPartition(jobID)},
		},
		ConsistentRead: aws.Bool(true),
		Limit:          aws.Int32(limit),
	}
	if token != "" {
		sk, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil {
			return nil, "", fmt.Errorf("page token: %w", ErrBadToken)
		}
		in.ExclusiveStartKey = tablelayout.Key{PK: tablelayout.AuditPartition(jobID), SK: string(sk)}.Item()
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out, err := s.db.Query(ctx, in)
	if err != nil {
		return nil, "", fmt.Errorf("query audit trail of job %s: %w", jobID, err)
	}
	var items []eventItem
	if err := attributevalue.UnmarshalListOfMaps(out.Items, &items); err != nil {
		return nil, "", fmt.Errorf("unmarshal audit trail of job %s: %w", jobID, err)
	}
	events := make([]Event, 0, len(items))
	for _, it := range items {
		events = append(events, it.event())
	}
	next := ""
	if sk, ok := out.LastEvaluatedKey[tablelayout.SK].(*types.AttributeValueMemberS); ok {
		next = base64.RawURLEncoding.EncodeToString([]byte(sk.Value))
	}
	return events, next, nil
}

// ErrBadToken is the error of a page token this store did not make.
var ErrBadToken = errors.New("not a page token of this listing")

func toEventItem(e Event) eventItem {
	k := tablelayout.AuditEvent(e.JobID, e.At.UnixMilli(), e.ID)
	it := eventItem{
		PK: k.PK, SK: k.SK, JobID: e.JobID, ID: e.ID, At: e.At.UnixMilli(),
		Action: ActionName(e.Action), Actor: e.Actor, Reason: e.Reason, ApprovedBy: e.ApprovedBy,
		RequestID: e.RequestID, Row: e.Row, Detail: e.Detail, Outcome: e.Outcome,
	}
	if e.Resolution != spoolv1.Resolution_RESOLUTION_UNSPECIFIED {
		it.Resolution = e.Resolution.String()
	}
	if e.RequestedAction != spoolv1.OperatorAction_OPERATOR_ACTION_UNSPECIFIED {
		it.RequestedAction = ActionName(e.RequestedAction)
	}
	if !e.OutcomeAt.IsZero() {
		it.OutcomeAt = e.OutcomeAt.UnixMilli()
	}
	return it
}

func (it eventItem) event() Event {
	e := Event{
		JobID: it.JobID, ID: it.ID, At: time.UnixMilli(it.At), Action: ParseAction(it.Action), Actor: it.Actor,
		Reason: it.Reason, ApprovedBy: it.ApprovedBy, RequestID: it.RequestID, Row: it.Row,
		Resolution:      spoolv1.Resolution(spoolv1.Resolution_value[it.Resolution]),
		RequestedAction: ParseAction(it.RequestedAction), Detail: it.Detail, Outcome: it.Outcome,
	}
	if it.OutcomeAt != 0 {
		e.OutcomeAt = time.UnixMilli(it.OutcomeAt)
	}
	return e
}

// ActionName is the stored form of an action: the enum name without
// prefix, lowercase as people write it ("resolve").
func ActionName(a spoolv1.OperatorAction) string {
	switch a {
	case spoolv1.OperatorAction_OPERATOR_ACTION_PAUSE:
		return "pause"
	case spoolv1.OperatorAction_OPERATOR_ACTION_RESUME:
		return "resume"
	case spoolv1.OperatorAction_OPERATOR_ACTION_CANCEL:
		return "cancel"
	case spoolv1.OperatorAction_OPERATOR_ACTION_RESOLVE:
		return "resolve"
	case spoolv1.OperatorAction_OPERATOR_ACTION_REDRIVE:
		return "redrive"
	case spoolv1.OperatorAction_OPERATOR_ACTION_REQUEST:
		return "request"
	case spoolv1.OperatorAction_OPERATOR_ACTION_APPROVE:
		return "approve"
	case spoolv1.OperatorAction_OPERATOR_ACTION_UPDATE:
		return "update"
	}
	return ""
}

// ParseAction is the inverse of ActionName; unspecified for anything else.
func ParseAction(name string) spoolv1.OperatorAction {
	for a := range spoolv1.OperatorAction_name {
		if n := ActionName(spoolv1.OperatorAction(a)); n != "" && n == name {
			return spoolv1.OperatorAction(a)
		}
	}
	return spoolv1.OperatorAction_OPERATOR_ACTION_UNSPECIFIED
}

// newID is 8 random bytes in hex: events and requests of one millisecond
// still differ.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
