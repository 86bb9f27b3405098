package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
	"github.com/spoolhq/spool/platform/reference"
)

// Sending records, immediately before the request, that the owner is
// sending: from here on a crash leaves the outcome unknown. It fails with
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
	err := l.write(ctx, "mark "+r.Key+" sending", r.Version, &next, l.claimBudget())
	if errors.Is(err, ErrConflict) {
		err = ErrLost
	}
	if err != nil {
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
	// Reference is the destination's reference for a DELIVERED row, at
	// most reference.MaxLen bytes; ReferenceTruncated says it was cut.
	Reference          string
	ReferenceTruncated bool
}

// Finish records the outcome of the owner's send, and returns the record
// and the job counter deltas. It fails with ErrLost when the claim was
// taken over meanwhile: the newer owner's view of the row stands.
//
// The outcome is what the destination said, known nowhere else: a write the
// table did not acknowledge is sent again, with backoff, for up to
// Options.OutcomeRetry (or until ctx ends), and each failure is logged.
// If the send's lease ran out meanwhile and another dispatcher recorded the
// row UNKNOWN, the outcome still replaces that guess as long as nobody sent
// the row since (the fence has not moved): a 2xx is never turned into
// UNKNOWN by a slow or throttled table.
func (l *Ledger) Finish(ctx context.Context, r Record, o Outcome) (Record, jobstore.Counts, error) {
	if r.State != spoolv1.TransactionState_TRANSACTION_STATE_SENDING || r.Owner != l.o.Owner {
		return Record{}, jobstore.Counts{}, fmt.Errorf("finish %s: %w", r.Key, ErrState)
	}
	start := time.Now()
	base := r
	for round := 1; ; round++ {
		next, c, err := l.outcome(base, o)
		if err != nil {
			return Record{}, jobstore.Counts{}, err
		}
		err = l.write(ctx, "finish "+r.Key, base.Version, &next, l.o.OutcomeRetry-time.Since(start))
		if err == nil {
			return next, c, nil
		}
		if cur, ok := current(err); ok && round < maxClaimRounds && expiredSend(r, cur) {
			base = cur
			continue
		}
		if errors.Is(err, ErrConflict) {
			err = ErrLost
		}
		return Record{}, jobstore.Counts{}, fmt.Errorf("finish %s as %s: %w", r.Key, StateName(o.State), err)
	}
}

// expiredSend says cur is the send r recorded UNKNOWN by another dispatcher
// because its lease ran out: the same owner and fence, so nobody has sent
// the row since, and r's outcome is the better knowledge.
func expiredSend(r, cur Record) bool {
	return cur.State == spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN && cur.Owner == r.Owner && cur.Fence == r.Fence
}

// outcome is the record and the counts of o written over base.
func (l *Ledger) outcome(base Record, o Outcome) (Record, jobstore.Counts, error) {
	now := l.o.Now().UnixMilli()
	next := base
	next.State = o.State
	next.LastStatus = int32(o.Status)
	next.Reason = bound(o.Reason)
	next.LeaseUntil = 0
	next.Version++
	next.UpdatedAt = now
	var c jobstore.Counts
	switch o.State {
	case spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, spoolv1.TransactionState_TRANSACTION_STATE_REJECTED:
		c = settle(base.Counted, o.State)
		next.Reference, next.RefTruncated = reference.Bound(o.Reference)
		next.RefTruncated = next.RefTruncated || o.ReferenceTruncated
		next.Counted = false
		next.Envelope = nil
		next.ExpiresAt = l.expiry(now)
		if base.Dead {
			c.DeadLettered, next.Dead = -1, false
		}
	case spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED:
		switch {
		case !o.DeadLettered:
			c.Retries = 1
		case !base.Counted && !base.Dead:
			// A row counted UNKNOWN stays there: it is settled already.
			c.DeadLettered, next.Dead = 1, true
		}
	case spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
		if !base.Counted {
			c.Unknown = 1
		}
		if base.Dead {
			c.DeadLettered, next.Dead = -1, false
		}
		next.Counted = true
		next.Envelope = marshalEnvelope(o.Envelope, base.Envelope)
	default:
		return Record{}, jobstore.Counts{}, fmt.Errorf("finish %s as %v: not an outcome", base.Key, o.State)
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
