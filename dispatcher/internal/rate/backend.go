package rate

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// Memory is a Backend in memory, for one process and for tests.
type Memory struct {
	mu   sync.Mutex
	next map[string]time.Time
}

// NewMemory returns an empty schedule.
func NewMemory() *Memory { return &Memory{next: map[string]time.Time{}} }

// Reserve implements Backend.
func (m *Memory) Reserve(_ context.Context, dest string, floor time.Time, span time.Duration) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	start := m.next[dest]
	if start.Before(floor) {
		start = floor
	}
	m.next[dest] = start.Add(span)
	return start, nil
}

// attrNext is the schedule item's next unreserved slot, Unix nanoseconds.
const attrNext = "next_ns"

// idleExpiry is how long a schedule no one reserves from stays in the
// table: an idle schedule holds nothing worth keeping.
const idleExpiry = 24 * time.Hour

// maxAttempts bounds the alternation between extending and restarting the
// schedule; each failed condition means another dispatcher just moved it,
// so two or three attempts settle it in practice.
const maxAttempts = 8

// API is the part of the DynamoDB client the schedule uses.
type API interface {
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
}

// Dynamo is the Backend on DynamoDB: one item per destination in the job
// table (tablelayout.Rate).
type Dynamo struct {
	db    API
	table string

	mu   sync.Mutex
	idle map[string]bool // whether dest's last reservation restarted it
}

// NewDynamo returns a backend over table, which provision.EnsureTable made.
func NewDynamo(db API, table string) *Dynamo {
	return &Dynamo{db: db, table: table, idle: map[string]bool{}}
}

// Reserve implements Backend with single-item conditional writes. Under
// load the schedule is busy (its next slot is at or after floor) and one
// write extends it; after an idle spell a second write restarts it at
// floor. It tries first whichever worked last time.
func (d *Dynamo) Reserve(ctx context.Context, dest string, floor time.Time, span time.Duration) (time.Time, error) {
	d.mu.Lock()
	restart := d.idle[dest]
	d.mu.Unlock()
	key := tablelayout.Rate(dest).Item()
	values := map[string]types.AttributeValue{
		":floor":   number(floor.UnixNano()),
		":expires": number(floor.Add(idleExpiry).Unix()),
	}
	for range maxAttempts {
		var (
			start time.Time
			err   error
		)
		if restart {
			start, err = d.restart(ctx, key, values, floor, span)
		} else {
			start, err = d.extend(ctx, key, values, span)
		}
		if err == nil {
			d.mu.Lock()
			d.idle[dest] = restart
			d.mu.Unlock()
			return start, nil
		}
		if !condwrite.Failed(err) {
			return time.Time{}, err
		}
		restart = !restart
	}
	return time.Time{}, fmt.Errorf("schedule of %s: still contended after %d attempts", dest, maxAttempts)
}

// extend reserves span from the schedule's next slot, if that is not
// before floor.
func (d *Dynamo) extend(ctx context.Context, key, values map[string]types.AttributeValue, span time.Duration) (time.Time, error) {
	in := d.scheduleWrite(key, with(values, ":span", number(int64(span))), "#next = #next + :span", "#next >= :floor")
	in.ReturnValues = types.ReturnValueUpdatedNew
	out, err := d.db.UpdateItem(ctx, in)
	if err != nil {
		return time.Time{}, fmt.Errorf("extend schedule: %w", err)
	}
	n, ok := out.Attributes[attrNext].(*types.AttributeValueMemberN)
	if !ok {
		return time.Time{}, fmt.Errorf("extend schedule: no %s in the answer", attrNext)
	}
	next, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("extend schedule: %s %q: %w", attrNext, n.Value, err)
	}
	return time.Unix(0, next-int64(span)), nil
}

// restart reserves span from floor, if the schedule is idle (its next slot
// is before floor) or new.
func (d *Dynamo) restart(ctx context.Context, key, values map[string]types.AttributeValue, floor time.Time, span time.Duration) (time.Time, error) {
	_, err := d.db.UpdateItem(ctx, d.scheduleWrite(key, with(values, ":end", number(floor.Add(span).UnixNano())),
		"#next = :end", "attribute_not_exists(#next) OR #next < :floor"))
	if err != nil {
		return time.Time{}, fmt.Errorf("restart schedule: %w", err)
	}
	return floor, nil
}

// scheduleWrite is the one write both reservations make to the schedule's
// item, under cond: set assigns #next (the schedule's next free time, in
// Unix ns), and the item's expiry moves with every write.
func (d *Dynamo) scheduleWrite(key, values map[string]types.AttributeValue, set, cond string) *dynamodb.UpdateItemInput {
	return &dynamodb.UpdateItemInput{
		TableName:           aws.String(d.table),
		Key:                 key,
		UpdateExpression:    aws.String("SET " + set + ", #exp = :expires"),
		ConditionExpression: aws.String(cond),
		ExpressionAttributeNames: map[string]string{
			"#next": attrNext, "#exp": tablelayout.ExpiresAt,
		},
		ExpressionAttributeValues: values,
	}
}

func number(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

// with returns a copy of values with one more.
func with(values map[string]types.AttributeValue, name string, v types.AttributeValue) map[string]types.AttributeValue {
	out := make(map[string]types.AttributeValue, len(values)+1)
	for k, x := range values {
		out[k] = x
	}
	out[name] = v
	return out
}
