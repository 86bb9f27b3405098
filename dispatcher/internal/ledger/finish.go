package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// ErrLost when the claim was taken over. A record the claim already wrote
// SENDING is returned as it is, without a write.
func (l *Ledger) Sending(ctx context.Context, r Record) (Record, error) {
	if r.State == spoolv1.TransactionState_TRANSACTION_STATE_SENDING && r.Owner == l.o.Owner {
		return r, nil
	}
	if r.State != spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED || r.Owner != l.o.Owner {
		return Record{}, fmt.Errorf("mark %s sending: %w", r.Key, ErrState)
	}
	now := l.o.Now().UnixMilli()
	next := r
	next.State = spoolv1.TransactionState_TRANSACTION_STATE_SENDING
	// The lease runs from the send, so a slow claim does not eat into it.
	next.LeaseUntil = now + l.o.Lease.Milliseconds()
	next.Attempts++
	next.Version++
	next.UpdatedAt = now
	if err := l.replaceOwned(ctx, r, next); err != nil {
		return Record{}, fmt.Errorf("mark %s sending: %w", r.Key, err)
	}
	return next, nil
}

// Outcome is how a send ended.
type Outcome struct {
	// State is DELIVERED, REJECTED, UNKNOWN, or CLAIMED to release the
	// claim for another attempt (nothing reached the destination, or it
	// asked to be retried).
	State spoolv1.TransactionState
	// Status is the HTTP status, 0 without an answer.
	Status int
	Reason string
	// Envelope is kept when the outcome is UNKNOWN.
	Envelope *spoolv1.Envelope
	// DeadLettered goes with CLAIMED: the retry budget is spent and the
	// message goes to the dead-letter queue, so the row settles its job
	// until it is redriven.
	DeadLettered bool
}

// Finish records the outcome of the owner's send, and returns the record
// and the job counter deltas. It fails with ErrLost when the claim was
// taken over meanwhile: the newer owner's view of the row stands.
func (l *Ledger) Finish(ctx context.Context, r Record, o Outcome) (Record, jobstore.Counts, error) {
	if r.State != spoolv1.TransactionState_TRANSACTION_STATE_SENDING || r.Owner != l.o.Owner {
		return Record{}, jobstore.Counts{}, fmt.Errorf("finish %s: %w", r.Key, ErrState)
	}
	now := l.o.Now().UnixMilli()
	next := r
	next.State = o.State
	next.LastStatus = int32(o.Status)
	next.Reason = bound(o.Reason)
	next.LeaseUntil = 0
	next.Version++
	next.UpdatedAt = now
	var c jobstore.Counts
	switch o.State {
	case spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, spoolv1.TransactionState_TRANSACTION_STATE_REJECTED:
		c = settle(r.Counted, o.State)
		next.Counted = false
		next.Envelope = nil
		next.ExpiresAt = l.expiry(now)
		if r.Dead {
			c.DeadLettered, next.Dead = -1, false
		}
	case spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED:
		switch {
		case !o.DeadLettered:
			c.Retries = 1
		case !r.Counted && !r.Dead:
			// A row counted UNKNOWN stays there: it is settled already.
			c.DeadLettered, next.Dead = 1, true
		}
	case spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
		if !r.Counted {
			c.Unknown = 1
		}
		if r.Dead {
			c.DeadLettered, next.Dead = -1, false
		}
		next.Counted = true
		next.Envelope = marshalEnvelope(o.Envelope, r.Envelope)
	default:
		return Record{}, jobstore.Counts{}, fmt.Errorf("finish %s as %v: not an outcome", r.Key, o.State)
	}
	if err := l.replaceOwned(ctx, r, next); err != nil {
		return Record{}, jobstore.Counts{}, fmt.Errorf("finish %s as %v: %w", r.Key, o.State, err)
	}
	return next, c, nil
}

// expiry is the time to live of a record settled at now (Unix ms).
func (l *Ledger) expiry(now int64) int64 {
	if l.o.Retention <= 0 {
		return 0
	}
	return time.UnixMilli(now).Add(l.o.Retention).Unix()
}

// settle is the count of a row reaching a final state, moving it out of
// Unknown when it was counted there.
func settle(counted bool, s spoolv1.TransactionState) jobstore.Counts {
	var c jobstore.Counts
	if s == spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED {
		c.Delivered = 1
	} else {
		c.Failed = 1
	}
	if counted {
		c.Unknown = -1
	}
	return c
}

// replaceOwned writes next over r, and turns a lost condition into ErrLost.
func (l *Ledger) replaceOwned(ctx context.Context, r, next Record) error {
	err := l.b.Replace(ctx, r.Version, next)
	if errors.Is(err, ErrConflict) {
		return ErrLost
	}
	return err
}
