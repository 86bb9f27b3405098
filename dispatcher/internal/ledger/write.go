package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/smithy-go"
)

// The write protocol. Every change of a record is one conditional write:
// create it if absent, or replace it if its version is still the one read.
// On AWS a write can be applied and its answer lost (a dropped connection,
// a timeout); the SDK then sends it again, and the second try fails the
// condition the first one satisfied. The write was done, and the caller
// would read it as another writer's: its own claim as Busy, its own outcome
// as a lost claim.
//
// So every write carries a random write id of its own, and a write whose
// condition failed first asks whether the record holds this very write
// (the version it wrote, and its write id): if so, it is done. The record
// comes back with the failure where the endpoint returns it
// (ReturnValuesOnConditionCheckFailure), or from a strongly consistent
// read where it does not. Because of that check, sending the same write
// again is always safe, and the ledger does so itself after an error that
// leaves its fate unknown (a timeout, a throttle, an exhausted SDK retry),
// within a budget: the claim's writes for half the lease, an outcome's for
// Options.OutcomeRetry.
//
// The owner alone could not tell the writes apart: one dispatcher may hold
// two copies of a message (the queue delivers at least once) and race
// itself for the same version.

// Conflict is a conditional write that lost, with the record that won as
// the backend returned it. It matches ErrConflict.
type Conflict struct {
	Current Record
}

func (c *Conflict) Error() string {
	return fmt.Sprintf("%v (version %d)", ErrConflict, c.Current.Version)
}

// Is makes a Conflict match ErrConflict.
func (c *Conflict) Is(target error) bool { return target == ErrConflict }

// Defaults for Options.
const (
	// DefaultOutcomeRetry bounds how long an outcome is retried: long enough
	// to ride out a throttled partition or a brief outage of the table,
	// short enough that a delivery slot is not held indefinitely.
	DefaultOutcomeRetry = 2 * time.Minute
	// DefaultRetryBackoff is the first wait between tries of a write; it
	// doubles, with jitter, up to maxRetryBackoff.
	DefaultRetryBackoff = 100 * time.Millisecond
	maxRetryBackoff     = 5 * time.Second
)

// write stores next: created when prev is 0 (versions start at 1), else
// over version prev. It gives next a fresh write id. It returns nil when
// the record holds next, whether this try or an earlier one whose answer
// was lost wrote it; a *Conflict (or ErrConflict when no record stands)
// when another write holds the record; or the last error when it stays
// unknown past budget or ctx ends. Each failed try is logged with its
// reason.
func (l *Ledger) write(ctx context.Context, what string, prev int64, next *Record, budget time.Duration) error {
	next.Write = rand.Uint64() | 1 // never 0, the id of a record written before ids
	start := time.Now()
	wait := l.o.RetryBackoff
	for try := 1; ; try++ {
		err := l.try(ctx, prev, *next)
		if err == nil || errors.Is(err, ErrConflict) || permanent(err) {
			return err
		}
		pause := wait/2 + rand.N(wait/2+1)
		if ctx.Err() != nil || time.Since(start)+pause > budget {
			return fmt.Errorf("gave up after %d tries in %s: %w", try, time.Since(start).Round(time.Millisecond), err)
		}
		l.o.Log.WarnContext(ctx, "ledger write failed; trying again", "write", what, "key", next.Key, "try", try, "retry_in", pause, "error", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, maxRetryBackoff)
	}
}

// try makes one write and, when its condition fails, checks whether the
// record already holds it.
func (l *Ledger) try(ctx context.Context, prev int64, next Record) error {
	var err error
	if prev == 0 {
		err = l.b.Create(ctx, next)
	} else {
		err = l.b.Replace(ctx, prev, next)
	}
	if !errors.Is(err, ErrConflict) {
		return err
	}
	var c *Conflict
	if !errors.As(err, &c) {
		cur, ok, err := l.b.Get(ctx, next.Key)
		if err != nil {
			// Unknown still: the caller may send the same write again.
			return fmt.Errorf("read %s back after a failed condition: %w", next.Key, err)
		}
		if !ok {
			return ErrConflict
		}
		c = &Conflict{Current: cur}
	}
	if c.Current.Version == next.Version && c.Current.Write == next.Write {
		return nil
	}
	return c
}

// current returns the record that won over a write that failed with err,
// when it is known.
func current(err error) (Record, bool) {
	var c *Conflict
	if errors.As(err, &c) {
		return c.Current, true
	}
	return Record{}, false
}

// permanent says trying a write again cannot help: the request itself is
// refused (a malformed item, a missing table, a denied call).
func permanent(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "ValidationException", "ResourceNotFoundException", "AccessDeniedException",
		"UnrecognizedClientException", "ItemCollectionSizeLimitExceededException":
		return true
	}
	return false
}
