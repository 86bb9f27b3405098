package jobstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobevent"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// The outbox. A transition a person may need to hear of (package
// jobevent) stores its event in the job record, in the very conditional
// write that makes it, as an attribute named for the event's id; the event
// is sent by whoever reads it there and removed once sent. The transition
// and its event therefore land together or not at all, a process that dies
// after the write leaves the event for another to send, and a write
// retried or raced by another writer either lands once or not at all, so
// one transition is one event id.
//
// Which jobs to look at is a register (tablelayout.Outbox), written before
// every write that may store an event, so a job holding an event is always
// listed. An entry may be removed once its job is final and holds no event:
// every write that stores an event requires a job that is not final, so
// none can land after that.
//
// Rows events (UNKNOWN, dead-lettered) are coalesced: one per job and kind
// per RowsEvery at most, each announcing a new high of its count, so a job
// with a hundred thousand UNKNOWN rows sends a few events, not a hundred
// thousand.

const (
	// eventAttrPrefix names the record's attributes that hold events.
	eventAttrPrefix = "event:"
	// attrOutboxMarked is when a job was last listed in the register.
	attrOutboxMarked = "marked_at"
	// DefaultRowsEvery is the least time between two rows events of one
	// kind of one job.
	DefaultRowsEvery = time.Minute
)

// WithEvents makes the store keep job events: its transitions store
// theirs. Without it (the default) they store none, so a fleet that sends
// no events keeps no outbox; every process whose writes make transitions
// (ingestor and dispatchers) must have it for every event to be kept.
func WithEvents() Option {
	return func(s *Store) { s.events = true }
}

// WithEventHook keeps job events (WithEvents), and calls hook with a job's
// id and an event's after this store wrote the event into the job's
// record, so the process can send it at once rather than wait for a sweep.
// It names the one event this store wrote: another process sends its own.
func WithEventHook(hook func(jobID, eventID string)) Option {
	return func(s *Store) { s.events, s.eventHook = true, hook }
}

// WithRowsEvery sets the least time between two rows events of one kind
// of one job (DefaultRowsEvery when unset).
func WithRowsEvery(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.rowsEvery = d
		}
	}
}

// PendingEvent is an event stored in a job record and not yet sent.
type PendingEvent struct {
	ID   string
	Body []byte
	// Stored is when the transition's write stored it.
	Stored time.Time
	// Direct says its writer sends it itself (WithEventHook), so a sweep
	// leaves it alone for a while; an event nobody sends at once (the
	// ingestor's) is for the next sweep.
	Direct bool
}

// listOutbox puts the job in the outbox register; it comes before every
// write that may store an event.
func (s *Store) listOutbox(ctx context.Context, id string) error {
	item := tablelayout.Outbox(id).Item()
	item[attrOutboxMarked] = num(millis(s.now()))
	if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(s.table), Item: item}); err != nil {
		return fmt.Errorf("list job %s in the outbox: %w", id, err)
	}
	return nil
}

// withEvent adds e to update (a SET expression): the write that makes the
// transition also stores its event.
func withEvent(update string, direct bool, names map[string]string, values map[string]types.AttributeValue, e jobevent.Event) (string, error) {
	body, err := e.Marshal()
	if err != nil {
		return "", err
	}
	stored, err := attributevalue.Marshal(storedEvent{Body: string(body), At: e.Time.UnixMilli(), Direct: direct})
	if err != nil {
		return "", fmt.Errorf("marshal event %s: %w", e.ID, err)
	}
	names["#event"] = eventAttrPrefix + e.ID
	values[":event"] = stored
	return update + ", #event = :event", nil
}

// storedEvent is an event as its job's record holds it, in the attribute
// eventAttrPrefix + its id; LeaseEvent adds a lease_until to it.
type storedEvent struct {
	Body string `dynamodbav:"body"`
	// At is when the transition's write stored it, Unix milliseconds.
	At     int64 `dynamodbav:"at"`
	Direct bool  `dynamodbav:"direct"`
}

// evented runs an update that stores e, after listing the job in the
// outbox, and tells the hook when it landed.
func (s *Store) evented(ctx context.Context, in *dynamodb.UpdateItemInput, jobID string, e jobevent.Event) (*dynamodb.UpdateItemOutput, error) {
	if !s.events {
		return s.db.UpdateItem(ctx, in)
	}
	if err := s.listOutbox(ctx, jobID); err != nil {
		return nil, err
	}
	if in.ExpressionAttributeNames == nil {
		in.ExpressionAttributeNames = map[string]string{}
	}
	update, err := withEvent(aws.ToString(in.UpdateExpression), s.eventHook != nil, in.ExpressionAttributeNames, in.ExpressionAttributeValues, e)
	if err != nil {
		return nil, err
	}
	in.UpdateExpression = aws.String(update)
	out, err := s.db.UpdateItem(ctx, in)
	if err == nil {
		s.eventStored(jobID, e.ID)
	}
	return out, err
}

// eventStored tells the hook that the job holds an event this process
// stored (also when it recognised its own write whose answer was lost).
func (s *Store) eventStored(jobID, eventID string) {
	if s.eventHook != nil && s.events {
		s.eventHook(jobID, eventID)
	}
}

// event is an event of j's transition of kind to state, at now.
func event(j *spoolv1.Job, kind jobevent.Kind, n int64, state spoolv1.JobState, now time.Time) jobevent.Event {
	return jobevent.Event{
		ID: jobevent.ID(j.GetJobId(), kind, n), Kind: kind, JobID: j.GetJobId(), Time: now.UTC(),
		State: stateName(state), FileName: j.GetFileName(),
		Counts: jobevent.Counts{
			Total: j.GetTotal(), Delivered: j.GetDelivered(), Failed: j.GetFailed(), Unknown: j.GetUnknown(),
			DeadLettered: j.GetDeadLettered(), Duplicates: j.GetDuplicateRows(), Dropped: j.GetDropped(),
			RowsRejected: j.GetRowsRejected(),
		},
	}
}

// Outbox returns the ids of the jobs listed in the outbox register.
func (s *Store) Outbox(ctx context.Context) ([]string, error) {
	var ids []string
	p := dynamodb.NewQueryPaginator(s.db, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": tablelayout.PK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(tablelayout.OutboxPartition)},
		ConsistentRead:            aws.Bool(true),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the outbox: %w", err)
		}
		for _, it := range out.Items {
			if sk, ok := it[tablelayout.SK].(*types.AttributeValueMemberS); ok {
				ids = append(ids, tablelayout.OpenJobID(sk.Value))
			}
		}
	}
	return ids, nil
}

// PendingEvents returns the events the job's record holds, oldest first,
// and whether the job is final (no event can be stored any more). A job
// that does not exist holds none and is final.
func (s *Store) PendingEvents(ctx context.Context, id string) ([]PendingEvent, bool, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            tablelayout.Job(id).Item(),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, false, fmt.Errorf("read events of job %s: %w", id, err)
	}
	if len(out.Item) == 0 {
		return nil, true, nil
	}
	var evs []PendingEvent
	for name, av := range out.Item {
		evID, ok := strings.CutPrefix(name, eventAttrPrefix)
		if !ok {
			continue
		}
		var se storedEvent
		if err := attributevalue.Unmarshal(av, &se); err != nil || se.Body == "" {
			continue
		}
		evs = append(evs, PendingEvent{ID: evID, Body: []byte(se.Body), Stored: time.UnixMilli(se.At), Direct: se.Direct})
	}
	sort.Slice(evs, func(a, b int) bool { return evs[a].Stored.Before(evs[b].Stored) })
	state, _ := out.Item["state"].(*types.AttributeValueMemberS)
	final := state != nil && state.Value != stateName(spoolv1.JobState_JOB_STATE_RECEIVING) &&
		state.Value != stateName(spoolv1.JobState_JOB_STATE_SEALED)
	return evs, final, nil
}

// ClearEvent removes a sent event from the job's record. Clearing one
// already cleared (by another sender) is not an error.
func (s *Store) ClearEvent(ctx context.Context, jobID, eventID string) error {
	_, err := s.updateJob(ctx, jobID, "clear event "+eventID, jobUpdate{
		update: "REMOVE #event",
		cond:   "attribute_exists(#event)",
		names:  map[string]string{"#event": eventAttrPrefix + eventID},
	})
	return err
}

// LeaseEvent takes a pending event for one sender until now+d, so that
// dispatchers sweeping at once do not all send it: it reports false when
// another sender holds a lease that has not run out, or the event is gone
// (sent and cleared). A sender that dies holding it only delays the event
// by d.
func (s *Store) LeaseEvent(ctx context.Context, jobID, eventID string, d time.Duration) (bool, error) {
	now := s.now()
	w, err := s.updateJob(ctx, jobID, "lease event "+eventID, jobUpdate{
		update: "SET #event.lease_until = :until",
		cond:   "attribute_exists(#event) AND (attribute_not_exists(#event.lease_until) OR #event.lease_until <= :now)",
		names:  map[string]string{"#event": eventAttrPrefix + eventID},
		values: map[string]types.AttributeValue{
			":until": num(millis(now.Add(d))),
			":now":   num(millis(now)),
		},
	})
	return w.held, err
}

// Unlist takes a job out of the outbox register. Call it only when
// PendingEvents found the job final with no event.
func (s *Store) Unlist(ctx context.Context, jobID string) error {
	if _, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table),
		Key:       tablelayout.Outbox(jobID).Item(),
	}); err != nil {
		return fmt.Errorf("unlist job %s from the outbox: %w", jobID, err)
	}
	return nil
}

// rowsAttrs are the record's attributes for the last announced high of a
// rows event, and when it was announced.
var rowsAttrs = map[jobevent.Kind][2]string{
	jobevent.RowsUnknown:      {"announced_unknown", "announced_unknown_at"},
	jobevent.RowsDeadLettered: {"announced_dead_lettered", "announced_dead_lettered_at"},
}

// AnnounceRows stores a rows event (jobevent.RowsUnknown or
// RowsDeadLettered) of a SEALED job whose count of such rows is n, j's
// figures, when n is above the count last announced and the last such
// event of the job is at least RowsEvery old. It reports whether this call
// stored it. The write is conditional on both, so of dispatchers that see
// the same count at once one announces it, and the event's id carries n,
// a new high of the job's count, so two events are two transitions.
func (s *Store) AnnounceRows(ctx context.Context, j *spoolv1.Job, kind jobevent.Kind, n int64) (bool, error) {
	if !s.events {
		return false, nil
	}
	attrs, ok := rowsAttrs[kind]
	if !ok || n <= 0 {
		return false, fmt.Errorf("announce rows of job %s: kind %q: %w", j.GetJobId(), kind, errors.ErrUnsupported)
	}
	now := s.now()
	e := event(j, kind, n, spoolv1.JobState_JOB_STATE_SEALED, now)
	e.Rows = n
	w, err := s.updateJob(ctx, j.GetJobId(), fmt.Sprintf("announce %s of job %s", kind, j.GetJobId()), jobUpdate{
		update: "SET #n = :n, #at = :now",
		cond:   "#state = :sealed AND (attribute_not_exists(#n) OR #n < :n) AND (attribute_not_exists(#at) OR #at <= :since)",
		names:  map[string]string{"#state": "state", "#n": attrs[0], "#at": attrs[1]},
		values: map[string]types.AttributeValue{
			":sealed": str(stateName(spoolv1.JobState_JOB_STATE_SEALED)),
			":n":      num(n),
			":now":    num(millis(now)),
			":since":  num(millis(now.Add(-s.rowsEvery))),
		},
		event: &e,
	})
	return w.held, err
}
