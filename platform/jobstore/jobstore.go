// Package jobstore keeps the job record: one DynamoDB item per submitted
// file, shared by the ingestor (which creates and seals it) and every
// dispatcher (which counts its rows and completes it).
//
// Every change is a single-item conditional write, so any number of
// processes update one job without coordination, and the design runs
// unchanged on DynamoDB and on emulators without transactions. Every
// write is also correct when it is applied twice, or applied and not
// acknowledged, as the SDK's retries make happen on AWS:
//
//   - Counters are never added to. Each writer (one dispatcher process)
//     keeps its cumulative counts of a job in its own item of the job's
//     partition, written whole, over an older version only; a read sums
//     them (one Query). A repair from the ledger writes the correction
//     that makes the sum right, as an absolute, versioned write too.
//   - A conditional write whose condition fails reads the item and asks
//     whether it holds this writer's own write (same stream, figures,
//     job id, time written); if so it is done.
//   - A job completes only on a count of its delivery ledger that covers
//     its total (Complete), never on counters alone.
package jobstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
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

// API is the part of the DynamoDB client the store uses.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// Store reads and writes job records in one table.
type Store struct {
	db         API
	table      string
	now        func() time.Time
	abortAfter time.Duration
	tenant     string
	rowsEvery  time.Duration
	events     bool
	eventHook  func(jobID, eventID string)
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

// WithTenant scopes job keys to a tenant, so that fleets sharing one
// table each have their own: a file submitted by one with a key another
// used is a new job, not the other's. Job ids are unique anyway. The job
// record keeps the key as the caller gave it. Empty means no tenant, and
// keys as they were before tenants existed; a fleet that sets a tenant
// later no longer finds the keys it claimed without one.
func WithTenant(tenant string) Option {
	return func(s *Store) { s.tenant = tenant }
}

// WithClock replaces time.Now, so tests can expire leases without waiting.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// New returns a store over table.
func New(db API, table string, opts ...Option) *Store {
	s := &Store{db: db, table: table, now: time.Now, abortAfter: DefaultAbortAfter, rowsEvery: DefaultRowsEvery}
	for _, o := range opts {
		o(s)
	}
	return s
}

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: fmt.Sprint(n)}
}

func str(s string) types.AttributeValue {
	return &types.AttributeValueMemberS{Value: s}
}
