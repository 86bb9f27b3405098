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
// implementations: DynamoDB (the job table, items keyed TX#<transaction
// key>) and Memory (for tests). Every change replaces the whole record on
// the condition that its version is the one read, which is the single-item
// optimistic write DynamoDB does best and every emulator implements.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
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

// MaxReason bounds the reason kept on a record, a destination's answer
// included.
const MaxReason = 256

// Record is one transaction in the ledger. Times are Unix milliseconds.
type Record struct {
	Key        string
	JobID      string
	Row        int64
	State      spoolv1.TransactionState
	Owner      string
	LeaseUntil int64
	Fence      int64
	Version    int64
	// Attempts counts the requests sent: it is bumped with SENDING, before
	// the request, so that a send whose sender died counts as one. A row
	// applied twice is then always one with two attempts or more.
	Attempts    int32
	LastStatus  int32
	Reason      string
	BusinessKey string
	Amount      string
	UpdatedAt   int64
	// Counted says the row is counted in the job's Unknown figure: it became
	// UNKNOWN once, and a later outcome moves that count.
	Counted bool
	// Resend is set by a person who found the transaction missing at the
	// third party: the next claim sends it even under the hold policy.
	Resend bool
	// Dead says the row is counted in the job's DeadLettered figure: its
	// retry budget ran out and its message went to the dead-letter queue.
	// A later outcome (after a redrive) moves that count.
	Dead bool
	// Envelope is the transaction's envelope (protobuf binary), kept while
	// the row is UNKNOWN so that a person can have it resent after the
	// queue's copy is gone. It is payroll data at rest in the table for as
	// long as the row is unsettled, like the queue's copy, and it is
	// removed once the row is DELIVERED or REJECTED.
	Envelope []byte
	// DupJobID and DupRow name, on a DUPLICATE record, the row whose
	// record holds the transaction.
	DupJobID string
	DupRow   int64
	// ExpiresAt (Unix seconds) is when DynamoDB may delete a settled
	// record (its time to live); 0 on records that must stay.
	ExpiresAt int64
}

// Entry returns the record as a report entry.
func (r Record) Entry() *spoolv1.LedgerEntry {
	e := &spoolv1.LedgerEntry{
		JobId: r.JobID, Row: r.Row, TransactionKey: r.Key, State: r.State,
		BusinessKey: r.BusinessKey, Amount: r.Amount, Attempts: r.Attempts,
		LastStatus: r.LastStatus, Reason: r.Reason,
		DuplicateOfJobId: r.DupJobID, DuplicateOfRow: r.DupRow,
	}
	if r.UpdatedAt != 0 {
		e.UpdatedAt = timestamppb.New(time.UnixMilli(r.UpdatedAt))
	}
	return e
}

// Backend stores records.
type Backend interface {
	// Get returns the record of key, strongly consistent; ok is false when
	// there is none.
	Get(ctx context.Context, key string) (r Record, ok bool, err error)
	// Create writes r unless a record of r.Key exists (ErrConflict).
	Create(ctx context.Context, r Record) error
	// Replace writes next over the record of next.Key if its version is
	// still prev (ErrConflict otherwise).
	Replace(ctx context.Context, prev int64, next Record) error
	// ByJob calls fn for the job's records in state, rows ascending.
	ByJob(ctx context.Context, jobID string, state spoolv1.TransactionState, fn func(Record) error) error
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
	return &Ledger{b: b, o: o}
}

// Policy returns the unknown-outcome policy.
func (l *Ledger) Policy() Policy { return l.o.Policy }

// Tx is a transaction about to be claimed.
type Tx struct {
	Key         string
	JobID       string
	Row         int64
	BusinessKey string
	Amount      string
	Envelope    *spoolv1.Envelope
}

// Verdict is what a claim means for the message.
type Verdict int

const (
	// Send: the caller owns the transaction and goes on to send it.
	Send Verdict = iota
	// Busy: another dispatcher's claim is live; leave the message.
	Busy
	// Settled: the transaction is DELIVERED or REJECTED already, or the
	// row is recorded DUPLICATE of another row's transaction; delete the
	// message without sending.
	Settled
	// Held: the outcome is unknown and the policy holds it; delete the
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
	err := l.b.Create(ctx, fresh)
	if err == nil {
		return Claim{Verdict: Send, Record: fresh}, nil
	}
	if !errors.Is(err, ErrConflict) {
		return Claim{}, fmt.Errorf("claim %s: %w", tx.Key, err)
	}
	var counts jobstore.Counts
	var cur Record
	read := true
	for range maxClaimRounds {
		if read {
			var ok bool
			var err error
			cur, ok, err = l.b.Get(ctx, tx.Key)
			if err != nil {
				return Claim{Counts: counts}, fmt.Errorf("claim %s: %w", tx.Key, err)
			}
			if !ok {
				err := l.b.Create(ctx, fresh)
				if errors.Is(err, ErrConflict) {
					continue
				}
				if err != nil {
					return Claim{Counts: counts}, fmt.Errorf("claim %s: %w", tx.Key, err)
				}
				return Claim{Verdict: Send, Record: fresh, Counts: counts}, nil
			}
		}
		read = true
		if cur.JobID != tx.JobID || cur.Row != tx.Row {
			// Another row carries the same business key: this row is a
			// duplicate of its transaction, never sent on its own.
			return l.duplicate(ctx, tx, cur, now, counts)
		}
		switch cur.State {
		case spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, spoolv1.TransactionState_TRANSACTION_STATE_REJECTED:
			counts.Suppressed++
			return Claim{Verdict: Settled, Record: cur, Counts: counts}, nil

		case spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED:
			if cur.LeaseUntil > now {
				return Claim{Verdict: Busy, Record: cur, Counts: counts}, nil
			}
			next, err := l.takeOver(ctx, cur, now)
			if errors.Is(err, ErrConflict) {
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
			err := l.b.Replace(ctx, cur.Version, next)
			if errors.Is(err, ErrConflict) {
				continue
			}
			if err != nil {
				return Claim{Counts: counts}, fmt.Errorf("expire send of %s: %w", tx.Key, err)
			}
			// Only the writer whose conditional write won counts it.
			if !cur.Counted {
				counts.Unknown++
			}
			cur, read = next, false

		case spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN:
			if !cur.Resend && l.o.Policy == Hold {
				return Claim{Verdict: Held, Record: cur, Counts: counts}, nil
			}
			next, err := l.takeOver(ctx, cur, now)
			if errors.Is(err, ErrConflict) {
				continue
			}
			if err != nil {
				return Claim{Counts: counts}, err
			}
			return Claim{Verdict: Send, Record: next, Counts: counts}, nil

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
	err := l.b.Create(ctx, dup)
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
	if err := l.b.Replace(ctx, cur.Version, next); err != nil {
		return Record{}, fmt.Errorf("take over %s: %w", cur.Key, err)
	}
	return next, nil
}

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

// Resolve settles an UNKNOWN row after a person checked the third party:
// DELIVERED records it delivered; RESEND marks it to be sent once more,
// and the caller puts the returned record's envelope back on the queue.
// It fails with ErrNotFound, or ErrState (naming the state) when the row is
// not UNKNOWN.
func (l *Ledger) Resolve(ctx context.Context, jobID string, row int64, res spoolv1.Resolution) (Record, jobstore.Counts, error) {
	for range maxClaimRounds {
		cur, ok, err := l.b.Find(ctx, jobID, row)
		if err != nil {
			return Record{}, jobstore.Counts{}, fmt.Errorf("find row %d of job %s: %w", row, jobID, err)
		}
		if !ok {
			return Record{}, jobstore.Counts{}, fmt.Errorf("row %d of job %s: %w", row, jobID, ErrNotFound)
		}
		// The index is eventually consistent: read the record itself.
		cur, ok, err = l.b.Get(ctx, cur.Key)
		if err != nil || !ok {
			return Record{}, jobstore.Counts{}, fmt.Errorf("read row %d of job %s: %w", row, jobID, errors.Join(err, ErrNotFound))
		}
		if cur.State != spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN {
			return Record{}, jobstore.Counts{}, fmt.Errorf("row %d of job %s is %s: %w", row, jobID, StateName(cur.State), ErrState)
		}
		now := l.o.Now().UnixMilli()
		next := cur
		next.Version++
		next.UpdatedAt = now
		var c jobstore.Counts
		switch res {
		case spoolv1.Resolution_RESOLUTION_DELIVERED:
			next.State = spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED
			next.Reason = "resolved: delivered, confirmed at the destination"
			next.Counted = false
			next.Envelope = nil
			next.ExpiresAt = l.expiry(now)
			c = settle(cur.Counted, next.State)
		case spoolv1.Resolution_RESOLUTION_RESEND:
			if len(cur.Envelope) == 0 {
				return Record{}, jobstore.Counts{}, fmt.Errorf("row %d of job %s has no envelope kept to resend: %w", row, jobID, ErrState)
			}
			next.Resend = true
			next.Reason = "resolved: resend, missing at the destination"
		default:
			return Record{}, jobstore.Counts{}, fmt.Errorf("resolve row %d of job %s: resolution %v", row, jobID, res)
		}
		err = l.b.Replace(ctx, cur.Version, next)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return Record{}, jobstore.Counts{}, fmt.Errorf("resolve row %d of job %s: %w", row, jobID, err)
		}
		return next, c, nil
	}
	return Record{}, jobstore.Counts{}, fmt.Errorf("resolve row %d of job %s: %w", row, jobID, ErrConflict)
}

// ReportOrder is the order of states in a report: what needs a person
// first.
var ReportOrder = []spoolv1.TransactionState{
	spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN,
	spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED,
	spoolv1.TransactionState_TRANSACTION_STATE_SENDING,
	spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED,
	spoolv1.TransactionState_TRANSACTION_STATE_REJECTED,
	spoolv1.TransactionState_TRANSACTION_STATE_DUPLICATE,
}

// Report calls fn for every record of the job, in ReportOrder and rows
// ascending within a state. It reads the job once per state rather than
// holding the job in memory, so memory stays flat whatever the job's size.
func (l *Ledger) Report(ctx context.Context, jobID string, fn func(Record) error) error {
	for _, s := range ReportOrder {
		if err := l.b.ByJob(ctx, jobID, s, fn); err != nil {
			return fmt.Errorf("report %s rows of job %s: %w", StateName(s), jobID, err)
		}
	}
	return nil
}

// EnvelopeProto returns the envelope kept on r, or nil.
func (r Record) EnvelopeProto() (*spoolv1.Envelope, error) {
	if len(r.Envelope) == 0 {
		return nil, nil
	}
	var e spoolv1.Envelope
	if err := proto.Unmarshal(r.Envelope, &e); err != nil {
		return nil, fmt.Errorf("unmarshal kept envelope of %s: %w", r.Key, err)
	}
	return &e, nil
}

func marshalEnvelope(e *spoolv1.Envelope, kept []byte) []byte {
	if e == nil {
		return kept
	}
	b, err := proto.Marshal(e)
	if err != nil {
		return kept
	}
	return b
}

// StateName is the stored form of a state: the enum name without prefix.
func StateName(s spoolv1.TransactionState) string {
	return strings.TrimPrefix(s.String(), "TRANSACTION_STATE_")
}

func parseState(s string) spoolv1.TransactionState {
	return spoolv1.TransactionState(spoolv1.TransactionState_value["TRANSACTION_STATE_"+s])
}

// bound cuts s to MaxReason bytes on a rune boundary.
func bound(s string) string {
	if len(s) <= MaxReason {
		return s
	}
	s = s[:MaxReason]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
