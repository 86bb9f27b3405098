package ledger

import (
	"context"
	"errors"
	"fmt"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

// Resolve settles an UNKNOWN row after a person checked the third party:
// DELIVERED records it delivered; RESEND marks it to be sent once more,
// and the caller puts the returned record's envelope back on the queue.
// The record keeps who resolved it. It fails with ErrNotFound, or ErrState
// (naming the state) when the row is not UNKNOWN — except when the row
// was resolved already under the same four-eyes request (by.Request), an
// approval applied before its answer was lost: the record then comes back
// as it is, with no counts to add.
func (l *Ledger) Resolve(ctx context.Context, jobID string, row int64, res spoolv1.Resolution, by Resolver) (Record, jobstore.Counts, error) {
	for range maxClaimRounds {
		cur, err := l.Row(ctx, jobID, row)
		if err != nil {
			return Record{}, jobstore.Counts{}, err
		}
		if by.Request != "" && cur.Resolved.Request == by.Request && cur.State != spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN {
			return cur, jobstore.Counts{}, nil
		}
		if cur.State != spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN {
			return Record{}, jobstore.Counts{}, fmt.Errorf("row %d of job %s is %s: %w", row, jobID, StateName(cur.State), ErrState)
		}
		now := l.o.Now().UnixMilli()
		next := cur
		next.Version++
		next.UpdatedAt = now
		next.Resolved = by
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
		err = l.write(ctx, fmt.Sprintf("resolve row %d of job %s", row, jobID), cur.Version, &next, l.o.OutcomeRetry)
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

// Row reads the record of a job's row; ErrNotFound when there is none.
func (l *Ledger) Row(ctx context.Context, jobID string, row int64) (Record, error) {
	cur, ok, err := l.b.Find(ctx, jobID, row)
	if err != nil {
		return Record{}, fmt.Errorf("find row %d of job %s: %w", row, jobID, err)
	}
	if !ok {
		return Record{}, fmt.Errorf("row %d of job %s: %w", row, jobID, ErrNotFound)
	}
	// The index is eventually consistent: read the record itself.
	cur, ok, err = l.b.Get(ctx, cur.Key)
	if err != nil || !ok {
		return Record{}, fmt.Errorf("read row %d of job %s: %w", row, jobID, errors.Join(err, ErrNotFound))
	}
	return cur, nil
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
