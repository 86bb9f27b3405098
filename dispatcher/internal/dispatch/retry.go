package dispatch

import (
	"fmt"
	"time"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deadletter"
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
)

// exhausted returns the dead-letter reason when the retry budget of the
// row is spent, nil otherwise. rec.Attempts counts this attempt.
func (h *Handler) exhausted(m consume.Message, rec ledger.Record, r result) *deadletter.Reason {
	attempts := int(rec.Attempts) - m.AttemptBase
	last := r.describe()
	switch {
	case attempts >= h.o.MaxAttempts:
		return &deadletter.Reason{
			Reason: fmt.Sprintf("gave up after %d attempts; last: %s", attempts, last), Status: r.outcome.Status, Attempts: int(rec.Attempts),
		}
	case !m.SentAt.IsZero() && h.o.Now().Sub(m.SentAt) >= h.o.MaxAge:
		return &deadletter.Reason{
			Reason:   fmt.Sprintf("gave up after %s in the queue (%d attempts); last: %s", h.o.Now().Sub(m.SentAt).Round(time.Second), attempts, last),
			Status:   r.outcome.Status,
			Attempts: int(rec.Attempts),
		}
	}
	return nil
}

// backoff is the wait before the attempt after the attempts-th: full
// jitter over an exponentially growing cap, and at least what the
// destination asked for in Retry-After, within RetryAfterMax.
func (h *Handler) backoff(attempts int, retryAfter time.Duration) time.Duration {
	ceil := doubled(h.o.BackoffBase, h.o.BackoffMax, attempts)
	d := time.Duration(h.o.Rand() * float64(ceil))
	return max(d, min(retryAfter, h.o.RetryAfterMax), time.Second)
}

// receivingDelay is the wait before a message of a RECEIVING job, received
// receiveCount times, comes back: 1 s, 2 s, 4 s, … up to ReceivingDelay.
// The receive count only paces the wait; it is not a retry budget.
func (h *Handler) receivingDelay(receiveCount int) time.Duration {
	return doubled(firstReceivingDelay, h.o.ReceivingDelay, receiveCount)
}

// pausedDelay is the wait before a message of a paused job, received
// receiveCount times, comes back: 10 s, 20 s, … up to PausedDelay.
func (h *Handler) pausedDelay(receiveCount int) time.Duration {
	return doubled(firstPausedDelay, h.o.PausedDelay, receiveCount)
}

// doubled is first doubled for every n after the first, capped at ceil:
// first, 2·first, 4·first, … ceil.
func doubled(first, ceil time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < ceil; i++ {
		d *= 2
	}
	return min(d, ceil)
}
