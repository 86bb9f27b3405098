// Package dispatchmetrics defines the dispatcher's domain metrics and
// collects them without the delivery path knowing: each metric is taken
// from a decorator around an interface the path already uses (the job
// counter deltas, the sender, the ledger, the queue, the counter store), or
// read at scrape time from the flow control, as GetDispatcherStatus reads
// it. No label carries a job id, a row or a value: every label has a fixed,
// small set of values, created at zero so that a dashboard sees a 0 rather
// than a gap.
//
// It lives outside internal/ so that deploy/ can list the names the
// dispatcher exports and check its dashboard and alarms against them.
package dispatchmetrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Outcomes are the values of spool_deliveries_total's outcome label, one
// per job counter the deliveries move.
var Outcomes = []string{"delivered", "rejected", "retried", "unknown", "dead_lettered", "suppressed", "duplicate", "dropped"}

// StatusClasses are the values of the status_class label of destination
// requests: metrics.StatusClass of the answer, "error" without one.
var StatusClasses = []string{"2xx", "3xx", "4xx", "5xx", "error"}

// QueueOps are the values of the op label of queue calls.
var QueueOps = []string{"receive", "delete", "visibility", "dead_letter"}

// LedgerOps are the values of the op label of ledger writes.
var LedgerOps = []string{"claim", "sending", "finish"}

// Flow is where the flow-control gauges are read: flow.Control.
type Flow interface {
	Status() *spoolv1.FlowControl
}

// Metrics are the dispatcher's domain metrics.
type Metrics struct {
	deliveries      *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	rateWait        prometheus.Histogram
	queueCalls      *prometheus.CounterVec
	queueErrors     *prometheus.CounterVec
	ledgerDuration  *prometheus.HistogramVec
	ledgerErrors    *prometheus.CounterVec
	flushes         prometheus.Counter
	flushErrors     prometheus.Counter
}

// New registers the dispatcher's metrics on reg. The flow-control gauges
// are read from flow at each scrape; without a flow (nil) they are left
// out.
func New(reg prometheus.Registerer, flow Flow) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_deliveries_total",
			Help: "Rows this dispatcher settled or moved, by outcome: the job counters it added (retried is a failed attempt that will be tried again; dead_lettered a row whose retry budget ran out).",
		}, []string{"outcome"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spool_destination_request_duration_seconds",
			Help:    "Latency of requests to the destination, by the class of the answer's status (error: no answer).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"status_class"}),
		rateWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "spool_rate_wait_seconds",
			Help:    "Time each delivery waited for the fleet-wide rate limit (none without a rate limit).",
			Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		queueCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_queue_calls_total",
			Help: "SQS calls of the receive loop: receive, delete (batches), visibility changes, dead letters sent.",
		}, []string{"op"}),
		queueErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_queue_call_errors_total",
			Help: "SQS calls of the receive loop that failed (for deletes, a batch with any entry failed).",
		}, []string{"op"}),
		ledgerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spool_ledger_write_duration_seconds",
			Help:    "Latency of the delivery ledger's writes of a delivery: the claim, the mark before sending, the outcome.",
			Buckets: []float64{.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"op"}),
		ledgerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_ledger_write_errors_total",
			Help: "Ledger writes of a delivery that failed (a lost claim included).",
		}, []string{"op"}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spool_counter_flushes_total",
			Help: "Writes of this dispatcher's job counters to the job table (one per job per flush).",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spool_counter_flush_errors_total",
			Help: "Writes of job counters that failed (tried again at the next flush).",
		}),
	}
	for _, o := range Outcomes {
		m.deliveries.WithLabelValues(o)
	}
	for _, c := range StatusClasses {
		m.requestDuration.WithLabelValues(c)
	}
	for _, op := range QueueOps {
		m.queueCalls.WithLabelValues(op)
		m.queueErrors.WithLabelValues(op)
	}
	for _, op := range LedgerOps {
		m.ledgerDuration.WithLabelValues(op)
		m.ledgerErrors.WithLabelValues(op)
	}
	reg.MustRegister(m.deliveries, m.requestDuration, m.rateWait, m.queueCalls, m.queueErrors,
		m.ledgerDuration, m.ledgerErrors, m.flushes, m.flushErrors)
	if flow != nil {
		reg.MustRegister(flowCollectors(flow)...)
	}
	return m
}

// RateWaited records a wait for the fleet-wide rate limit
// (flow.Control's observer).
func (m *Metrics) RateWaited(d time.Duration) {
	m.rateWait.Observe(d.Seconds())
}

// flowCollectors read the flow control at scrape time: the same figures
// GetDispatcherStatus answers with.
func flowCollectors(f Flow) []prometheus.Collector {
	gauge := func(name, help string, labels prometheus.Labels, v func(*spoolv1.FlowControl) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return v(f.Status()) })
	}
	cs := []prometheus.Collector{
		gauge("spool_concurrency_limit", "The adaptive concurrency limit: most requests this dispatcher lets be in flight now.", nil,
			func(s *spoolv1.FlowControl) float64 { return float64(s.GetConcurrencyLimit()) }),
		gauge("spool_in_flight", "Requests to the destination in flight (slots of the concurrency limit taken).", nil,
			func(s *spoolv1.FlowControl) float64 { return float64(s.GetInFlight()) }),
		gauge("spool_rate_limit", "The fleet-wide rate limit, requests per second (0: none).", nil,
			func(s *spoolv1.FlowControl) float64 { return s.GetRateLimit() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spool_breaker_opens_total",
			Help: "Times the circuit breaker opened from closed.",
		}, func() float64 { return float64(f.Status().GetBreakerOpens()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spool_breaker_open_seconds_total",
			Help: "Time the circuit breaker spent not closed (open or half-open).",
		}, func() float64 { return f.Status().GetBreakerOpenTime().AsDuration().Seconds() }),
	}
	for state, name := range map[spoolv1.BreakerState]string{
		spoolv1.BreakerState_BREAKER_STATE_CLOSED:    "closed",
		spoolv1.BreakerState_BREAKER_STATE_OPEN:      "open",
		spoolv1.BreakerState_BREAKER_STATE_HALF_OPEN: "half_open",
	} {
		cs = append(cs, gauge("spool_breaker_state", "The circuit breaker's state: 1 for the state it is in, 0 for the others.",
			prometheus.Labels{"state": name}, func(s *spoolv1.FlowControl) float64 {
				if s.GetBreakerState() == state {
					return 1
				}
				return 0
			}))
	}
	return cs
}
