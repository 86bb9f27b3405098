// Package ledger is the delivery ledger: one record per transaction, which
// the dispatchers change only by conditional writes, so that a transaction
// redelivered by the queue is never sent twice, and a transaction whose
// fate is unknown is held for a person to reconcile rather than guessed at.
//
// It lives in the dispatcher, not in platform: only dispatchers read or
// write it, and everyone else (the spool CLI) reaches it through the
// dispatcher's ReportJob and ResolveTransaction.
//
// The state machine (Ledger) is written once over a small Backend with two
// implementations: DynamoDB (the job table, items keyed TX#<ledger key>)
// and Memory (for tests).
//
// A record's key is the transaction key in the dispatcher fleet's
// namespace (envelope.Namespace: its destination, and its tenant when one
// is configured), so the same business key sent to two third parties, or
// by two fleets sharing the table, is two transactions. Records written
// before namespaces were keyed by the bare transaction key; a claim that
// names that key (Tx.LegacyKey) goes on with such a record where it is. Every change replaces the whole record on
// the condition that its version is the one read, which is the single-item
// optimistic write DynamoDB does best and every emulator implements. Each
// write is safe to apply twice, or to apply without an answer, and is sent
// again until its fate is known (see write.go): a retried claim is still the
// dispatcher's own, and the outcome after a 2xx is written, or the
// dispatcher says loudly that it could not be.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/positive"
)

var (
	// ErrConflict means a conditional write lost: the record is not the one
	// the writer read (or, on create, already exists).
	ErrConflict = errors.New("ledger record changed concurrently")
	// ErrLost means the caller no longer owns the transaction: its lease
	// expired and another dispatcher took it over (the fence moved on).
	ErrLost = errors.New("transaction claim lost")
	// ErrNotFound means the ledger has no record of the row.
	ErrNotFound = errors.New("no ledger record")
	// ErrState means the record is not in the state the change requires.
	ErrState = errors.New("ledger record is not in the required state")
)

// Backend stores records.
type Backend interface {
	// Get returns the record of key, strongly consistent; ok is false when
	// there is none.
	Get(ctx context.Context, key string) (r Record, ok bool, err error)
	// Create writes r unless a record of r.Key exists (ErrConflict).
	Create(ctx context.Context, r Record) error
	// Replace writes next over the record of next.Key if its version is
	// still prev (ErrConflict otherwise). Create and Replace may answer a
	// lost condition with a *Conflict carrying the record that stands, and
	// save the ledger a read.
	Replace(ctx context.Context, prev int64, next Record) error
	// ByJob calls fn for the job's records in state, rows ascending.
	ByJob(ctx context.Context, jobID string, state spoolv1.TransactionState, fn func(Record) error) error
	// Marks calls fn with the Mark of each of the job's records, in no
	// promised order.
	Marks(ctx context.Context, jobID string, fn func(Mark) error) error
	// Find returns the job's record of row; ok is false when there is none.
	Find(ctx context.Context, jobID string, row int64) (r Record, ok bool, err error)
}

// Policy is what happens to a transaction whose outcome is unknown.
type Policy int

const (
	// Hold never resends: the row waits for a person (the default).
	Hold Policy = iota
	// RetryWithKey resends with the same idempotency key, for destinations
	// that honour it.
	RetryWithKey
)

// ParsePolicy reads a policy's flag form.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "hold":
		return Hold, nil
	case "retry-with-key":
		return RetryWithKey, nil
	}
	return Hold, fmt.Errorf("unknown policy %q: want hold or retry-with-key", s)
}

func (p Policy) String() string {
	if p == RetryWithKey {
		return "retry-with-key"
	}
	return "hold"
}

// Options configure a Ledger.
type Options struct {
	// Owner identifies this dispatcher process in claims.
	Owner string
	// Lease is how long a claim (and a send) is owned before another
	// dispatcher may take it over; longer than any delivery.
	Lease  time.Duration
	Policy Policy
	// Retention is how long a settled record (DELIVERED, REJECTED,
	// DUPLICATE) is kept, and so how long it suppresses the same
	// transaction arriving again, in a redelivered message or another
	// file. Records of rows still unsettled or UNKNOWN never expire. Zero
	// keeps every record.
	Retention time.Duration
	// OutcomeRetry bounds how long Finish (and Resolve) keep sending an
	// outcome the table did not acknowledge; DefaultOutcomeRetry when 0.
	OutcomeRetry time.Duration
	// RetryBackoff is the first wait between tries of a write;
	// DefaultRetryBackoff when 0.
	RetryBackoff time.Duration
	// Log receives a line for every write that failed and is tried again;
	// slog.Default() when nil.
	Log *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Ledger runs the per-transaction state machine over a Backend. It is safe
// for concurrent use.
type Ledger struct {
	b Backend
	o Options
}

// New returns a ledger over b.
func New(b Backend, o Options) *Ledger {
	if o.Now == nil {
		o.Now = time.Now
	}
	o.OutcomeRetry = positive.Or(o.OutcomeRetry, DefaultOutcomeRetry)
	o.RetryBackoff = positive.Or(o.RetryBackoff, DefaultRetryBackoff)
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Ledger{b: b, o: o}
}

// Policy returns the unknown-outcome policy.
func (l *Ledger) Policy() Policy { return l.o.Policy }

// claimBudget bounds how long the writes of a claim are sent again: half
// the lease, so that a claim whose first answer was lost is known to be
// this dispatcher's while most of its lease is left to send it.
func (l *Ledger) claimBudget() time.Duration { return l.o.Lease / 2 }
