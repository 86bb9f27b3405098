// Package deadletter is Spool's side of the dead-letter queue: the reason
// attributes a dispatcher puts on every message it dead-letters, and the
// per-job listing and redrive operators run through DispatchService.
//
// Dead letters of every job share one queue, and SQS can only be read by
// receiving, so a per-job operation is a bounded scan: messages are
// received with a short hold, the job's are listed (or moved back to the
// main queue), and every other message is released at once. See Scanner.
package deadletter

import (
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// Attribute names of the reason a dispatcher attaches to a dead letter,
// and of the attempt base a redriven message carries. SQS allows ten
// attributes per message: the envelope's three, these five and the base
// fit.
const (
	AttrReason     = "spool-dl-reason"
	AttrStatus     = "spool-dl-status"
	AttrAttempts   = "spool-dl-attempts"
	AttrDispatcher = "spool-dl-dispatcher"
	AttrTime       = "spool-dl-time"
	// AttrAttemptBase is set on a redriven message to the attempts its row
	// had when it was dead-lettered: its retry budget starts again from
	// there, since the ledger's attempt count keeps growing.
	AttrAttemptBase = "spool-attempt-base"
)

// MaxReason bounds the reason text kept on a dead letter.
const MaxReason = 256

// Reason is why a message was dead-lettered.
type Reason struct {
	// Reason is a sentence for a person; it never holds row contents.
	Reason string
	// Status is the destination's last HTTP status, 0 when there was none.
	Status int
	// Attempts is the row's delivery attempts so far (ledger count).
	Attempts int
	// Dispatcher is the owner id of the dispatcher that dead-lettered it.
	Dispatcher string
	At         time.Time
}

// Mark returns attrs, without any earlier reason or attempt base, plus r.
// attrs is not changed.
func Mark(attrs map[string]types.MessageAttributeValue, r Reason) map[string]types.MessageAttributeValue {
	out := Strip(attrs)
	reason := r.Reason
	if len(reason) > MaxReason {
		reason = strings.ToValidUTF8(reason[:MaxReason], "")
	}
	if reason == "" {
		reason = "unspecified"
	}
	out[AttrReason] = str(reason)
	out[AttrStatus] = number(int64(r.Status))
	out[AttrAttempts] = number(int64(r.Attempts))
	if r.Dispatcher != "" {
		out[AttrDispatcher] = str(r.Dispatcher)
	}
	out[AttrTime] = str(r.At.UTC().Format(time.RFC3339Nano))
	return out
}

// Strip returns a copy of attrs without the reason and attempt base
// attributes.
func Strip(attrs map[string]types.MessageAttributeValue) map[string]types.MessageAttributeValue {
	out := make(map[string]types.MessageAttributeValue, len(attrs)+5)
	for k, v := range attrs {
		switch k {
		case AttrReason, AttrStatus, AttrAttempts, AttrDispatcher, AttrTime, AttrAttemptBase:
			continue
		}
		out[k] = v
	}
	return out
}

// Parse reads the reason off a dead letter's attributes. A message the
// queue's redrive policy moved (no dispatcher marked it) gets a reason
// saying so.
func Parse(attrs map[string]types.MessageAttributeValue) Reason {
	v, ok := attrs[AttrReason]
	if !ok {
		return Reason{Reason: "moved by the queue's redrive policy (maxReceiveCount reached)"}
	}
	r := Reason{Reason: aws.ToString(v.StringValue), Dispatcher: aws.ToString(attrs[AttrDispatcher].StringValue)}
	r.Status, _ = strconv.Atoi(aws.ToString(attrs[AttrStatus].StringValue))
	r.Attempts, _ = strconv.Atoi(aws.ToString(attrs[AttrAttempts].StringValue))
	r.At, _ = time.Parse(time.RFC3339Nano, aws.ToString(attrs[AttrTime].StringValue))
	return r
}

// AttemptBase reads a redriven message's attempt base, 0 when absent.
func AttemptBase(attrs map[string]types.MessageAttributeValue) int {
	n, _ := strconv.Atoi(aws.ToString(attrs[AttrAttemptBase].StringValue))
	return max(n, 0)
}

func str(s string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(s)}
}

func number(n int64) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("Number"), StringValue: aws.String(strconv.FormatInt(n, 10))}
}
