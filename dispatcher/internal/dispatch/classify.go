package dispatch

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// result is a send's outcome, classified once: for the ledger, for the
// flow control, and for the retry decision.
type result struct {
	outcome    ledger.Outcome
	flow       deliver.Outcome
	retryAfter time.Duration
}

// retry says the row is released for another attempt.
func (r result) retry() bool {
	return r.outcome.State == spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED
}

// describe names the last failure for a dead-letter reason: the status,
// or the kind of transport failure, never a response body (it may echo
// payroll data).
func (r result) describe() string {
	if r.outcome.Status != 0 {
		return fmt.Sprintf("%d %s", r.outcome.Status, http.StatusText(r.outcome.Status))
	}
	return r.outcome.Reason
}

// classify maps a send's result to the ledger outcome and to what it says
// about the destination (see deliver.Outcome).
func (h *Handler) classify(err error, e *spoolv1.Envelope) result {
	if err == nil {
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Status: http.StatusOK}, flow: deliver.Accepted}
	}
	f, ok := deliver.IsFailure(err)
	if !ok {
		// The request could not even be built: nothing was sent.
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Reason: err.Error()}, flow: deliver.NotSent}
	}
	retry := func(o deliver.Outcome) result {
		return result{
			outcome:    ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Status: f.Status, Reason: http.StatusText(f.Status)},
			flow:       o,
			retryAfter: f.RetryAfter,
		}
	}
	switch {
	case f.Status == 0 && f.Written:
		// The destination may have applied it: only the policy may resend.
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_UNKNOWN, Reason: unreachable(f), Envelope: e}, flow: deliver.Lost}
	case f.Status == 0:
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_CLAIMED, Reason: unreachable(f)}, flow: deliver.Overloaded}
	case slices.Contains(h.o.AlreadyApplied, f.Status):
		return result{outcome: ledger.Outcome{
			State: spoolv1.TransactionState_TRANSACTION_STATE_DELIVERED, Status: f.Status,
			Reason: fmt.Sprintf("%d %s: already applied", f.Status, http.StatusText(f.Status)),
		}, flow: deliver.Accepted}
	case f.Status == http.StatusTooManyRequests:
		return retry(deliver.Throttled)
	case f.Status == http.StatusRequestTimeout || f.Status >= 500:
		return retry(deliver.Overloaded)
	case f.Status == http.StatusConflict:
		// Unless configured as already applied, a 409 is transient: several
		// payment APIs answer it while a request with the same key is
		// still in progress, and counting that delivered would be a guess.
		// The destination answered, so it is up.
		return retry(deliver.Refused)
	case f.Status >= 400 && f.Status < 500:
		reason := fmt.Sprintf("%d %s", f.Status, http.StatusText(f.Status))
		if f.Excerpt != "" {
			reason += ": " + f.Excerpt
		}
		return result{outcome: ledger.Outcome{State: spoolv1.TransactionState_TRANSACTION_STATE_REJECTED, Status: f.Status, Reason: reason}, flow: deliver.Refused}
	default:
		// Unfollowed redirects and other oddities: the destination did not
		// take it, so try again; it answered, so it is up.
		return retry(deliver.Refused)
	}
}

// unreachable describes a failure without an answer. The URL is left out
// (it may carry a credential, and the reason goes to the ledger and onto
// dead letters): net/http wraps transport errors in a *url.Error naming it.
func unreachable(f *deliver.Failure) string {
	err := f.Err
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err
	}
	if err == nil {
		return "destination unreachable"
	}
	return "destination unreachable: " + err.Error()
}
