// Package dbfault wraps a DynamoDB client, for tests, with the failures AWS
// has and the emulators lack: a write that is applied but whose answer is
// lost, which aws-sdk-go-v2 then sends again (or gives up on), and
// throttling. Each call is matched against a plan that chooses its fault.
package dbfault

import (
	"context"
	"errors"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/platform/tablelayout"
)

// Fault is what happens to one call.
type Fault int

const (
	// Pass forwards the call and its answer.
	Pass Fault = iota
	// LoseRetried applies the call, loses its answer and sends it again,
	// as the SDK's retry does, returning the second answer.
	LoseRetried
	// Lose applies the call and returns ErrLost: the retries gave up.
	Lose
	// Throttle returns a throttling error without applying the call.
	Throttle
)

// ErrLost is the error of a call whose answer was lost.
var ErrLost = errors.New("dbfault: connection reset before the answer")

// Call is one call as the plan sees it.
type Call struct {
	// Op is the operation: GetItem, PutItem, UpdateItem, DeleteItem,
	// Query.
	Op string
	// PK and SK are the key of the item written or read; empty for a
	// Query.
	PK, SK string
}

// API is the client wrapped.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// DB is a client that injects faults. It is safe for concurrent use.
type DB struct {
	db API

	mu   sync.Mutex
	plan func(Call) Fault
	hits map[Fault]int
}

// New wraps db; plan chooses each call's fault (Pass when nil).
func New(db API, plan func(Call) Fault) *DB {
	return &DB{db: db, plan: plan, hits: map[Fault]int{}}
}

// SetPlan replaces the plan.
func (d *DB) SetPlan(plan func(Call) Fault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.plan = plan
}

// Injected returns how many calls got fault f.
func (d *DB) Injected(f Fault) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hits[f]
}

// Once returns a plan that gives f to the first n calls match accepts,
// and passes every other.
func Once(n int, f Fault, match func(Call) bool) func(Call) Fault {
	var mu sync.Mutex
	return func(c Call) Fault {
		mu.Lock()
		defer mu.Unlock()
		if n > 0 && match(c) {
			n--
			return f
		}
		return Pass
	}
}

func (d *DB) fault(c Call) Fault {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.plan == nil {
		return Pass
	}
	f := d.plan(c)
	if f != Pass {
		d.hits[f]++
	}
	return f
}

func keyOf(m map[string]types.AttributeValue) (string, string) {
	s := func(name string) string {
		if v, ok := m[name].(*types.AttributeValueMemberS); ok {
			return v.Value
		}
		return ""
	}
	return s(tablelayout.PK), s(tablelayout.SK)
}

// do runs call under the fault the plan chooses.
func do[T any](d *DB, c Call, call func() (T, error)) (T, error) {
	var zero T
	switch d.fault(c) {
	case LoseRetried:
		if _, err := call(); err != nil {
			return zero, err
		}
		return call()
	case Lose:
		if _, err := call(); err != nil {
			return zero, err
		}
		return zero, ErrLost
	case Throttle:
		return zero, &types.ProvisionedThroughputExceededException{Message: aws.String("dbfault: throttled")}
	}
	return call()
}

// GetItem implements API.
func (d *DB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	pk, sk := keyOf(in.Key)
	return do(d, Call{Op: "GetItem", PK: pk, SK: sk}, func() (*dynamodb.GetItemOutput, error) { return d.db.GetItem(ctx, in, opts...) })
}

// PutItem implements API.
func (d *DB) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	pk, sk := keyOf(in.Item)
	return do(d, Call{Op: "PutItem", PK: pk, SK: sk}, func() (*dynamodb.PutItemOutput, error) { return d.db.PutItem(ctx, in, opts...) })
}

// UpdateItem implements API.
func (d *DB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	pk, sk := keyOf(in.Key)
	return do(d, Call{Op: "UpdateItem", PK: pk, SK: sk}, func() (*dynamodb.UpdateItemOutput, error) { return d.db.UpdateItem(ctx, in, opts...) })
}

// DeleteItem implements API.
func (d *DB) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	pk, sk := keyOf(in.Key)
	return do(d, Call{Op: "DeleteItem", PK: pk, SK: sk}, func() (*dynamodb.DeleteItemOutput, error) { return d.db.DeleteItem(ctx, in, opts...) })
}

// Query implements API.
func (d *DB) Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	return do(d, Call{Op: "Query"}, func() (*dynamodb.QueryOutput, error) { return d.db.Query(ctx, in, opts...) })
}
