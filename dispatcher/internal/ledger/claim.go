package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Tx is a transaction about to be claimed.
type Tx struct {
	// Key is the key of its record: the envelope's transaction key in the
	// dispatcher's namespace (envelope.Namespace.LedgerKey).
	Key string
	// LegacyKey, when set, is the key its record had before keys were
	// namespaced. A record found under it is the transaction's record and
	// is claimed where it is, so that rows delivered, held or suppressed
	// before the change are not sent again after it.
	LegacyKey   string
	JobID       string
	Row         int64
	BusinessKey string
	Amount      string
	Envelope    *spoolv1.Envelope
}

// Verdict is what a claim means for the message.
type Verdict int

const (
	// Send means the caller owns the transaction and goes on to send it.
	Send Verdict = iota
	// Busy means another dispatcher's claim is live; leave the message.
	Busy
	// Settled means the transaction is DELIVERED or REJECTED already, or the
	// row is recorded DUPLICATE of another row's transaction; delete the
	// message without sending.
	Settled
	// Held means the outcome is unknown and the policy holds it; delete the
	// message without sending.
	Held
)

func (v Verdict) String() string {
	return [...]string{"send", "busy", "settled", "held"}[v]
}

// Claim is the result of Ledger.Claim.
type Claim struct {
	Verdict Verdict
	// Record is the record as the claim left it.
	Record Record
	// Counts are the job counter deltas the claim earned: Suppressed for a
	// settled duplicate, Unknown when this claim found a send whose lease
	// expired and was the one to record it UNKNOWN.
	Counts jobstore.Counts
}

// maxClaimRounds bounds how often a claim re-reads a record that keeps
// changing under it; past that, another dispatcher is clearly working on
// it and the message is left.
const maxClaimRounds = 4

// Claim takes ownership of tx for one send, or says why not. Its Counts
// are earned even when it fails: a claim that recorded an expired send
// UNKNOWN and then failed to take the row over has still moved the row
// into the job's Unknown figure, and the caller must count it, or the
// resend that later settles the row takes one off a count never added.
func (l *Ledger) Claim(ctx context.Context, tx Tx) (Claim, error) {
	if tx.LegacyKey != "" && tx.LegacyKey != tx.Key {
		_, ok, err := l.b.Get(ctx, tx.LegacyKey)
		if err != nil {
			return Claim{}, fmt.Errorf("claim %s: look for its record under the former key: %w", tx.Key, err)
		}
		if ok {
			tx.Key = tx.LegacyKey
		}
	}
	now := l.o.Now().UnixMilli()
	// The claim is written as SENDING: the caller sends at once (anything
	// it waits for, it waits for before claiming), so the claim and the
	// mark before the request are one conditional write, not two. The
	// window in which a crash leaves the row UNKNOWN is the same either
	// way: from this write until the request is on the wire.
	fresh := Record{
		Key: tx.Key, JobID: tx.JobID, Row: tx.Row, State: spoolv1.TransactionState_TRANSACTION_STATE_SENDING,
		Owner: l.o.Owner, LeaseUntil: now + l.o.Lease.Milliseconds(), Fence: 1, Version: 1, Attempts: 1,
		BusinessKey: tx.BusinessKey, Amount: tx.Amount, UpdatedAt: now,
	}
	// The first delivery of a row is by far the most common case: one
	// conditional create settles it, without a read.
	err := l.claimWrite(ctx, "claim "+tx.Key, 0, &fresh)
	if err == nil {
		return Claim{Verdict: Send, Record: fresh}, nil
	}
	if !errors.Is(err, ErrConflict) {
		return Claim{}, fmt.Errorf("claim %s: %w", tx.Key, err)
	}
	var counts jobstore.Counts
	// A lost write names the record that won when the backend returned it;
	// otherwise it is read.
	cur, read := current(err)
	for range maxClaimRounds {
		if !read {
			var ok bool
			var err error
			cur, ok, err = l.b.Get(ctx, tx.Key)
			if err != nil {
				return Claim{Counts: counts}, fmt.Errorf("claim %s: %w", tx.Key, err)
			}
			if !ok {
				err := l.claimWrite(ctx, "claim "+tx.Key, 0, &fresh)
				if errors.Is(err, ErrConflict) {
					cur, read = current(err)
					continue
				}
				if err != nil {
					return Claim{Counts: counts}, fmt.Errorf("claim %s: %w", tx.Key, err)
				}
				return Claim{Verdict: Send, Record: fresh, Counts: counts}, nil
			}
		}
		read = false
		if cur.JobID != tx.JobID || cur.Row != tx.Row {
			// Another row carries the same business key: this row is a
			// duplicate of its transaction, never sent on its own.
			return l.duplicate(ctx, tx, cur, now, counts)
		}
		switch cur.State {
		case spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, spoolv1.TransactionState_TRANSACTION_STATE_REJECTED:
			counts.Suppressed++
			return Claim{Verdict: Settled, Record: cur, Counts: counts}, nil

		case spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
			// A claim whose lease ran out before any send, and an UNKNOWN
			// row the policy (or an operator's resend) lets go out again,
			// are both taken over and sent.
			if cur.State == spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED && cur.LeaseUntil > now {
				return Claim{Verdict: Busy, Record: cur, Counts: counts}, nil
			}
			if cur.State == spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN && !cur.Resend && l.o.Policy == Hold {
				return Claim{Verdict: Held, Record: cur, Counts: counts}, nil
			}
			next, err := l.takeOver(ctx, cur, now)
			if errors.Is(err, ErrConflict) {
				cur, read = current(err)
				continue
			}
			if err != nil {
				return Claim{Counts: counts}, err
			}
			return Claim{Verdict: Send, Record: next, Counts: counts}, nil

		case spoolv1.TransactionState_TRANSACTION_STATE_SENDING:
			if cur.LeaseUntil > now {
				return Claim{Verdict: Busy, Record: cur, Counts: counts}, nil
			}
			// The sender died (or hung) during the request: whether the
			// destination applied it cannot be known from here.
			next := cur
			next.State = spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN
			next.Reason = "send lease expired: outcome unknown"
			next.LeaseUntil = 0
			next.Counted = true
			next.Envelope = marshalEnvelope(tx.Envelope, cur.Envelope)
			next.Version++
			next.UpdatedAt = now
			err := l.write(ctx, "expire send of "+tx.Key, cur.Version, &next, l.claimBudget())
			if errors.Is(err, ErrConflict) {
				cur, read = current(err)
				continue
			}
			if err != nil {
				return Claim{Counts: counts}, fmt.Errorf("expire send of %s: %w", tx.Key, err)
			}
			// Only the writer whose conditional write won counts it.
			if !cur.Counted {
				counts.Unknown++
			}
			cur, read = next, true

		default:
			return Claim{Counts: counts}, fmt.Errorf("claim %s: record in state %v", tx.Key, cur.State)
		}
	}
	return Claim{Verdict: Busy, Record: cur, Counts: counts}, nil
}

// duplicate settles tx, whose business key is held by another row's
// record cur. Once that transaction has an outcome (delivered, refused, or
// unknown and held), tx is recorded DUPLICATE under its own job and row,
// so that its job settles the row and reports it; the first writer counts
// it, later redeliveries are suppressed. While the other row is still
// being worked on, tx waits: its outcome is that row's.
func (l *Ledger) duplicate(ctx context.Context, tx Tx, cur Record, now int64, counts jobstore.Counts) (Claim, error) {
	switch cur.State {
	case spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, spoolv1.TransactionState_TRANSACTION_STATE_REJECTED,
		spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
	default:
		return Claim{Verdict: Busy, Record: cur, Counts: counts}, nil
	}
	dup := Record{
		Key: DuplicateKey(tx.JobID, tx.Row), JobID: tx.JobID, Row: tx.Row,
		State: spoolv1.TransactionState_TRANSACTION_STATE_DUPLICATE, Version: 1,
		BusinessKey: tx.BusinessKey, Amount: tx.Amount, UpdatedAt: now,
		Reason:   fmt.Sprintf("business key already %s by job %s row %d", strings.ToLower(StateName(cur.State)), cur.JobID, cur.Row),
		DupJobID: cur.JobID, DupRow: cur.Row, ExpiresAt: l.expiry(now),
	}
	err := l.write(ctx, "record duplicate "+dup.Key, 0, &dup, l.claimBudget())
	switch {
	case err == nil:
		counts.Duplicates++
	case errors.Is(err, ErrConflict):
		counts.Suppressed++
	default:
		return Claim{Counts: counts}, fmt.Errorf("record row %d of job %s duplicate of %s: %w", tx.Row, tx.JobID, cur.Key, err)
	}
	return Claim{Verdict: Settled, Record: dup, Counts: counts}, nil
}

// DuplicateKey is the key of the record of a row that duplicates another
// row's transaction. No envelope.TransactionKey starts with "dup:", so it
// cannot collide with one.
func DuplicateKey(jobID string, row int64) string {
	return "dup:" + jobID + ":" + strconv.FormatInt(row, 10)
}

// takeOver claims a record whose lease ended, or an UNKNOWN one to resend,
// and marks it SENDING in the same write (see Claim): the fence moves on,
// so the previous owner's late writes fail.
func (l *Ledger) takeOver(ctx context.Context, cur Record, now int64) (Record, error) {
	next := cur
	next.State = spoolv1.TransactionState_TRANSACTION_STATE_SENDING
	next.Owner = l.o.Owner
	next.LeaseUntil = now + l.o.Lease.Milliseconds()
	next.Attempts++
	next.Fence++
	next.Version++
	next.Resend = false
	next.UpdatedAt = now
	if err := l.claimWrite(ctx, "take over "+cur.Key, cur.Version, &next); err != nil {
		return Record{}, fmt.Errorf("take over %s: %w", cur.Key, err)
	}
	return next, nil
}

// claimWrite writes the claim next over version prev (0: creates it). A
// claim is written SENDING, so one whose fate stays unknown (the table
// did not answer within the budget, or ctx ended) and that did land would
// become UNKNOWN when its lease ran out, though nothing was sent: the
// caller does not send without a claim. So such a claim is withdrawn: put
// back to CLAIMED with its lease over, which the next claim takes over
// and sends. When the claim did not land, the withdrawal's condition fails
// and there is nothing to undo.
func (l *Ledger) claimWrite(ctx context.Context, what string, prev int64, next *Record) error {
	err := l.write(ctx, what, prev, next, l.claimBudget())
	if err == nil || errors.Is(err, ErrConflict) || errors.Is(err, ErrState) || permanent(err) {
		return err
	}
	back := *next
	back.State = spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED
	back.LeaseUntil = 0
	back.Attempts--
	back.Version++
	back.UpdatedAt = l.o.Now().UnixMilli()
	// The claim's own context may be what ended; the withdrawal gets its
	// own, as bounded as a claim.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.claimBudget())
	defer cancel()
	werr := l.write(wctx, "withdraw "+what, next.Version, &back, l.claimBudget())
	switch {
	case werr == nil:
		l.o.Log.WarnContext(ctx, "claim withdrawn after its write failed; nothing was sent", "write", what, "key", next.Key, "error", err)
	case errors.Is(werr, ErrConflict):
		// The claim never landed, or another claim has the record.
	default:
		l.o.Log.ErrorContext(ctx, "withdraw a claim whose write failed; if it landed, the row becomes UNKNOWN when its lease ends",
			"write", what, "key", next.Key, "error", errors.Join(err, werr))
	}
	return err
}

// Sending records, immediately before the request, that the owner is
// sending: from here on a crash leaves the outcome unknown. It fails with
