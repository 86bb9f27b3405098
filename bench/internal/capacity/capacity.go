// Package capacity is the arithmetic of docs/capacity.md: what a million
// rows cost in AWS requests, given the calls per row the benchmark counts,
// and how many dispatcher tasks a file needs against a destination of a
// given latency and rate limit. The benchmark runs it on the figures it
// measured, so the document's model is checked against them.
package capacity

import (
	"math"
	"strings"
	"time"
)

// On-demand prices in USD, us-east-1, as AWS publishes them (SQS standard
// queues, the first 100 billion requests a month; DynamoDB on demand since
// the November 2024 reduction). docs/capacity.md cites where they were
// checked; a quote, not a contract.
const (
	SQSPerMillionRequests = 0.40
	DynamoDBPerMillionWRU = 0.625
	DynamoDBPerMillionRRU = 0.125
)

// Kind is how AWS bills a call.
type Kind string

const (
	// Request is an SQS request (up to 64 KiB of payload; a batch of ten
	// small messages is one).
	Request Kind = "SQS requests"
	// Write is a DynamoDB write of an item up to 1 KiB: one write request
	// unit (a conditional write too, when it fails).
	Write Kind = "DynamoDB write units"
	// Read is a DynamoDB read of up to 4 KiB, counted as strongly
	// consistent: one read request unit (an eventually consistent read is
	// half).
	Read Kind = "DynamoDB read units"
	// Unknown is a call this model does not price (a control-plane call
	// such as DescribeTable).
	Unknown Kind = "unknown"
)

// KindOf says how a call, "service operation" as the benchmark counts
// them, is billed. Spool's items are under 1 KiB and its batches hold
// single-row messages, so one call is one unit, except batch writes.
func KindOf(op string) Kind {
	svc, name, _ := strings.Cut(op, " ")
	switch svc {
	case "SQS":
		return Request
	case "DynamoDB":
		switch name {
		case "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems":
			return Write
		case "GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems":
			return Read
		}
	}
	return Unknown
}

// Cost is what a million rows cost, by kind, in USD.
type Cost struct {
	PerKind map[Kind]float64
	// Units are the billed units per row, by kind.
	Units map[Kind]float64
	Total float64
}

// CostOfMillion prices a million rows from the calls per row by operation.
// A batch write is priced as one unit per call, which undercounts it by
// the items it holds; Spool's delivery path makes none.
func CostOfMillion(callsPerRow map[string]float64) Cost {
	c := Cost{PerKind: map[Kind]float64{}, Units: map[Kind]float64{}}
	for op, n := range callsPerRow {
		c.Units[KindOf(op)] += n
	}
	price := map[Kind]float64{Request: SQSPerMillionRequests, Write: DynamoDBPerMillionWRU, Read: DynamoDBPerMillionRRU}
	for k, units := range c.Units {
		// units per row × 1e6 rows × price per 1e6 units.
		c.PerKind[k] = units * price[k]
		c.Total += c.PerKind[k]
	}
	return c
}

// RowsPerSecond is one dispatcher task's delivery rate by Little's law:
// concurrency requests in flight, each taking latency, times the share of
// that ideal the task reaches (measured: what the ledger writes and the
// queue calls around each request take).
func RowsPerSecond(concurrency int, latency time.Duration, efficiency float64) float64 {
	return float64(concurrency) / latency.Seconds() * efficiency
}

// Plan is how many tasks a file needs.
type Plan struct {
	// Tasks is how many dispatcher tasks finish rows within the window.
	Tasks int
	// Rate is the rows/s that takes.
	Rate float64
	// Bound names what limits the plan: "tasks", or "destination rate
	// limit" when no number of tasks is enough.
	Bound string
	// Shortest is the least time the file takes at the destination's rate
	// limit, when that is the bound.
	Shortest time.Duration
}

// TasksFor plans rows within window at perTask rows/s each, against a
// destination that takes at most rateLimit requests/s (0: none).
func TasksFor(rows int, window time.Duration, perTask, rateLimit float64) Plan {
	need := float64(rows) / window.Seconds()
	if rateLimit > 0 && need > rateLimit {
		return Plan{
			Tasks: int(math.Ceil(rateLimit / perTask)), Rate: rateLimit, Bound: "destination rate limit",
			Shortest: time.Duration(float64(rows) / rateLimit * float64(time.Second)),
		}
	}
	return Plan{Tasks: int(math.Ceil(need / perTask)), Rate: need, Bound: "tasks"}
}
