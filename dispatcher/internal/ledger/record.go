package ledger

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
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
	// Write identifies the write that stored this version: random, new on
	// every write, so that a writer whose answer was lost can tell its own
	// write from another's.
	Write uint64
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
	// Resolved says who settled an UNKNOWN row by hand.
	Resolved Resolver
	// Reference is the destination's reference for a settled row, taken
	// from its accepting answer (package reference), at most
	// reference.MaxLen bytes; RefTruncated says it was cut.
	Reference    string
	RefTruncated bool
}

// Resolver is who resolved a row: the principal who asked, the one who
// approved under four-eyes (empty without), and the four-eyes request.
type Resolver struct {
	By, ApprovedBy, Request string
}

// Entry returns the record as a report entry.
func (r Record) Entry() *spoolv1.LedgerEntry {
	e := &spoolv1.LedgerEntry{
		JobId: r.JobID, Row: r.Row, TransactionKey: envelope.TransactionKeyOf(r.Key), State: r.State,
		BusinessKey: r.BusinessKey, Amount: r.Amount, Attempts: r.Attempts,
		LastStatus: r.LastStatus, Reason: r.Reason,
		DuplicateOfJobId: r.DupJobID, DuplicateOfRow: r.DupRow,
		ResolvedBy: r.Resolved.By, ApprovedBy: r.Resolved.ApprovedBy, ResolutionRequestId: r.Resolved.Request,
		Reference: r.Reference, ReferenceTruncated: r.RefTruncated,
	}
	if r.UpdatedAt != 0 {
		e.UpdatedAt = timestamppb.New(time.UnixMilli(r.UpdatedAt))
	}
	return e
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
	return strings.ToValidUTF8(s[:MaxReason], "")
}
