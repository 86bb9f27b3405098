package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// RequestRetention is how long a request item stays in the table after it
// expired, for ListPendingRequests' neighbours and people who look it up;
// the audit trail keeps its history for good.
const RequestRetention = 30 * 24 * time.Hour

// Errors of Approve.
var (
	ErrNotFound = errors.New("no such request")
	// ErrSelf: a principal may not approve its own request.
	ErrSelf    = errors.New("four-eyes rule: a request must be approved by a principal other than the one who made it")
	ErrExpired = errors.New("request expired")
	// ErrState: the request is not PENDING (nor APPROVED by the caller).
	ErrState = errors.New("request not pending")
)

// Request is a four-eyes request.
type Request struct {
	ID          string
	Action      spoolv1.OperatorAction
	JobID       string
	Row         int64
	Resolution  spoolv1.Resolution
	MaxScan     int32
	RequestedBy string
	RequestedAt time.Time
	Reason      string
	ExpiresAt   time.Time
	// State is as stored: a PENDING request past ExpiresAt is expired
	// (see StateAt) without a write.
	State         spoolv1.ApprovalState
	ApprovedBy    string
	ApprovedAt    time.Time
	ApproveReason string
	Outcome       string
}

// StateAt is the request's state at now: PENDING past its expiry is
// EXPIRED.
func (r Request) StateAt(now time.Time) spoolv1.ApprovalState {
	if r.State == spoolv1.ApprovalState_APPROVAL_STATE_PENDING && !now.Before(r.ExpiresAt) {
		return spoolv1.ApprovalState_APPROVAL_STATE_EXPIRED
	}
	return r.State
}

type requestItem struct {
	PK            string `dynamodbav:"pk"`
	SK            string `dynamodbav:"sk"`
	ID            string `dynamodbav:"request_id"`
	Action        string `dynamodbav:"action"`
	JobID         string `dynamodbav:"job"`
	Row           int64  `dynamodbav:"target_row,omitempty"`
	Resolution    string `dynamodbav:"resolution,omitempty"`
	MaxScan       int32  `dynamodbav:"max_scan,omitempty"`
	RequestedBy   string `dynamodbav:"requested_by"`
	RequestedAt   int64  `dynamodbav:"requested_at"`
	Reason        string `dynamodbav:"reason,omitempty"`
	Deadline      int64  `dynamodbav:"deadline"`
	State         string `dynamodbav:"state"`
	ApprovedBy    string `dynamodbav:"approved_by,omitempty"`
	ApprovedAt    int64  `dynamodbav:"approved_at,omitempty"`
	ApproveReason string `dynamodbav:"approve_reason,omitempty"`
	Outcome       string `dynamodbav:"outcome,omitempty"`
	// ExpiresAt is the table's time to live (tablelayout.ExpiresAt), Unix
	// seconds: RequestRetention after the deadline.
	ExpiresAt int64 `dynamodbav:"expires_at"`
}

func stateName(s spoolv1.ApprovalState) string {
	return strings.TrimPrefix(s.String(), "APPROVAL_STATE_")
}

func parseApprovalState(s string) spoolv1.ApprovalState {
	return spoolv1.ApprovalState(spoolv1.ApprovalState_value["APPROVAL_STATE_"+s])
}

func toRequestItem(r Request) requestItem {
	k := tablelayout.Request(r.ID)
	it := requestItem{
		PK: k.PK, SK: k.SK, ID: r.ID, Action: ActionName(r.Action), JobID: r.JobID, Row: r.Row,
		MaxScan: r.MaxScan, RequestedBy: r.RequestedBy, RequestedAt: r.RequestedAt.UnixMilli(), Reason: r.Reason,
		Deadline: r.ExpiresAt.UnixMilli(), State: stateName(r.State), ApprovedBy: r.ApprovedBy,
		ApproveReason: r.ApproveReason, Outcome: r.Outcome,
		ExpiresAt: r.ExpiresAt.Add(RequestRetention).Unix(),
	}
	if r.Resolution != spoolv1.Resolution_RESOLUTION_UNSPECIFIED {
		it.Resolution = r.Resolution.String()
	}
	if !r.ApprovedAt.IsZero() {
		it.ApprovedAt = r.ApprovedAt.UnixMilli()
	}
	return it
}

func (it requestItem) request() Request {
	r := Request{
		ID: it.ID, Action: ParseAction(it.Action), JobID: it.JobID, Row: it.Row,
		Resolution: spoolv1.Resolution(spoolv1.Resolution_value[it.Resolution]), MaxScan: it.MaxScan,
		RequestedBy: it.RequestedBy, RequestedAt: time.UnixMilli(it.RequestedAt), Reason: it.Reason,
		ExpiresAt: time.UnixMilli(it.Deadline), State: parseApprovalState(it.State), ApprovedBy: it.ApprovedBy,
		ApproveReason: it.ApproveReason, Outcome: it.Outcome,
	}
	if it.ApprovedAt != 0 {
		r.ApprovedAt = time.UnixMilli(it.ApprovedAt)
	}
	return r
}

func unmarshalRequest(m map[string]types.AttributeValue) (Request, error) {
	var it requestItem
	if err := attributevalue.UnmarshalMap(m, &it); err != nil {
		return Request{}, fmt.Errorf("unmarshal request: %w", err)
	}
	return it.request(), nil
}

// NewRequestID returns a fresh request id: the time in hex, so that ids
// sort as requests were made, and a random part.
func NewRequestID(now time.Time) string {
	return fmt.Sprintf("%x-%s", now.UnixMilli(), newID()[:8])
}

// Create stores r as a new PENDING request that expires after ttl, and
// returns it with its times set, and its id when r had none.
func (s *Store) Create(ctx context.Context, r Request, ttl time.Duration) (Request, error) {
	now := s.now()
	if r.ID == "" {
		r.ID = NewRequestID(now)
	}
	r.RequestedAt = now
	r.ExpiresAt = now.Add(ttl)
	r.State = spoolv1.ApprovalState_APPROVAL_STATE_PENDING
	exists, err := s.putNew(ctx, toRequestItem(r))
	if exists {
		// The id is fresh, so only this call's own write, applied before
		// a lost answer and sent again, can be there.
		got, gerr := s.Get(ctx, r.ID)
		if gerr == nil && got.RequestedBy == r.RequestedBy && got.RequestedAt.Equal(time.UnixMilli(r.RequestedAt.UnixMilli())) {
			return got, nil
		}
		return Request{}, fmt.Errorf("create request %s: id taken", r.ID)
	}
	if err != nil {
		return Request{}, fmt.Errorf("create request of job %s: %w", r.JobID, err)
	}
	return s.Get(ctx, r.ID)
}

// Get reads a request; ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, id string) (Request, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: tablelayout.Request(id).Item(), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Request{}, fmt.Errorf("read request %s: %w", id, err)
	}
	if len(out.Item) == 0 {
		return Request{}, fmt.Errorf("request %s: %w", id, ErrNotFound)
	}
	return unmarshalRequest(out.Item)
}

// Approve moves a PENDING request to APPROVED by approver, in one
// conditional write: not expired, not the requester's own. A request the
// same approver approved already (the answer to an earlier call was lost)
// comes back as it is, APPROVED or further, so the caller carries on
// where that call stopped. Errors: ErrNotFound, ErrSelf, ErrExpired,
// ErrState.
func (s *Store) Approve(ctx context.Context, id, approver, reason string) (Request, error) {
	now := s.now()
	updated, held, err := s.updateRequest(ctx, id,
		"SET #st = :approved, approved_by = :by, approved_at = :now, approve_reason = :why",
		"attribute_exists(pk) AND #st = :pending AND deadline > :now AND requested_by <> :by",
		map[string]types.AttributeValue{
			":approved": &types.AttributeValueMemberS{Value: stateName(spoolv1.ApprovalState_APPROVAL_STATE_APPROVED)},
			":pending":  &types.AttributeValueMemberS{Value: stateName(spoolv1.ApprovalState_APPROVAL_STATE_PENDING)},
			":by":       &types.AttributeValueMemberS{Value: approver},
			":now":      &types.AttributeValueMemberN{Value: strconv.FormatInt(now.UnixMilli(), 10)},
			":why":      &types.AttributeValueMemberS{Value: reason},
		})
	if err != nil {
		return Request{}, fmt.Errorf("approve request %s: %w", id, err)
	}
	if held {
		return updated, nil
	}
	cur, err := s.Get(ctx, id)
	if err != nil {
		return Request{}, err
	}
	switch {
	case cur.State != spoolv1.ApprovalState_APPROVAL_STATE_PENDING && cur.ApprovedBy == approver:
		return cur, nil
	case cur.RequestedBy == approver:
		return cur, fmt.Errorf("request %s by %s: %w", id, cur.RequestedBy, ErrSelf)
	case cur.State == spoolv1.ApprovalState_APPROVAL_STATE_PENDING && !now.Before(cur.ExpiresAt):
		return cur, fmt.Errorf("request %s expired at %s: %w", id, cur.ExpiresAt.UTC().Format(time.RFC3339), ErrExpired)
	default:
		return cur, fmt.Errorf("request %s is %s (approved by %s): %w", id, stateName(cur.State), cur.ApprovedBy, ErrState)
	}
}

// Settle moves an APPROVED request to APPLIED or FAILED with the outcome
// of its action. A request settled already is returned as it is.
func (s *Store) Settle(ctx context.Context, id string, actionErr error) (Request, error) {
	st, outcome := spoolv1.ApprovalState_APPROVAL_STATE_APPLIED, "ok"
	if actionErr != nil {
		st, outcome = spoolv1.ApprovalState_APPROVAL_STATE_FAILED, actionErr.Error()
	}
	updated, held, err := s.updateRequest(ctx, id, "SET #st = :st, outcome = :o", "#st = :approved",
		map[string]types.AttributeValue{
			":st":       &types.AttributeValueMemberS{Value: stateName(st)},
			":approved": &types.AttributeValueMemberS{Value: stateName(spoolv1.ApprovalState_APPROVAL_STATE_APPROVED)},
			":o":        &types.AttributeValueMemberS{Value: outcome},
		})
	if err != nil {
		return Request{}, fmt.Errorf("settle request %s: %w", id, err)
	}
	if !held {
		return s.Get(ctx, id)
	}
	return updated, nil
}

// updateRequest applies update to request id in one write conditional on
// cond ("#st" names the state attribute), and returns the request as the
// write left it. held is false when cond did not hold and nothing changed;
// the caller then reads the request to learn why.
func (s *Store) updateRequest(ctx context.Context, id, update, cond string, values map[string]types.AttributeValue) (r Request, held bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       tablelayout.Request(id).Item(),
		UpdateExpression:          aws.String(update),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  map[string]string{"#st": "state"},
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueAllNew,
	})
	if condwrite.Failed(err) {
		return Request{}, false, nil
	}
	if err != nil {
		return Request{}, false, err
	}
	r, err = unmarshalRequest(out.Attributes)
	return r, err == nil, err
}

// Pending returns the requests awaiting approval and not expired, and
// those approved whose action was not applied yet (an approval cut short),
// of one job or (jobID empty) every job, oldest first.
func (s *Store) Pending(ctx context.Context, jobID string) ([]Request, error) {
	now := s.now()
	filter := "((#st = :pending AND deadline > :now) OR #st = :approved)"
	values := map[string]types.AttributeValue{
		":pk":       &types.AttributeValueMemberS{Value: tablelayout.RequestPartition},
		":pending":  &types.AttributeValueMemberS{Value: stateName(spoolv1.ApprovalState_APPROVAL_STATE_PENDING)},
		":approved": &types.AttributeValueMemberS{Value: stateName(spoolv1.ApprovalState_APPROVAL_STATE_APPROVED)},
		":now":      &types.AttributeValueMemberN{Value: strconv.FormatInt(now.UnixMilli(), 10)},
	}
	if jobID != "" {
		filter += " AND job = :job"
		values[":job"] = &types.AttributeValueMemberS{Value: jobID}
	}
	p := dynamodb.NewQueryPaginator(s.db, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		KeyConditionExpression:    aws.String("pk = :pk"),
		FilterExpression:          aws.String(filter),
		ExpressionAttributeNames:  map[string]string{"#st": "state"},
		ExpressionAttributeValues: values,
		ConsistentRead:            aws.Bool(true),
	})
	var reqs []Request
	for p.HasMorePages() {
		pctx, cancel := context.WithTimeout(ctx, callTimeout)
		out, err := p.NextPage(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("query pending requests: %w", err)
		}
		for _, m := range out.Items {
			r, err := unmarshalRequest(m)
			if err != nil {
				return nil, err
			}
			reqs = append(reqs, r)
		}
	}
	return reqs, nil
}
