// Package destination is the sink's HTTP API: it plays the third-party
// service Spool delivers transactions to, and lets tests read back exactly
// what arrived.
//
// Every transaction request goes through one pipeline of stages:
//
//	decode → before-apply stages → apply → after-apply stages → answer
//
// Behaviours of a real destination are options that add stages: playing
// down (503 to everything for a while, POST /down), a rate limit (429 with
// Retry-After above it), latency, injected failures (503 before applying)
// and refusals of chosen rows (422) come before; holding the answer
// past the client's timeout and resetting the connection without an answer
// come after the transaction was applied, which is what makes an outcome
// unknown to the client. Apply itself either applies every request or, with
// WithHonourKey, applies each idempotency key once.
package destination

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spoolhq/spool/sink/internal/ledger"
)

// DefaultIdempotencyHeader is the header that carries a transaction's key.
const DefaultIdempotencyHeader = "Idempotency-Key"

// maxBody bounds a transaction body; a row is far smaller.
const maxBody = 1 << 20

// Rand is the random source the behaviours draw from. It must be safe for
// concurrent use.
type Rand interface {
	// Float64 returns a number in [0, 1).
	Float64() float64
	// Int64N returns a number in [0, n).
	Int64N(n int64) int64
}

// Call is one transaction request on its way through the pipeline.
type Call struct {
	Job string
	Row int64
	// Key is the value of the idempotency header, possibly empty.
	Key string
	// Applied is how many times the transaction has been applied, this
	// request included; set by the apply stage.
	Applied int64
}

// stage is one step of the pipeline. It returns false when it answered (or
// abandoned) the request itself, which ends the pipeline.
type stage func(w http.ResponseWriter, r *http.Request, c *Call) bool

// Server is the sink's HTTP handler.
type Server struct {
	ledger *ledger.Ledger
	log    *slog.Logger
	rand   Rand
	sleep  func(ctx context.Context, d time.Duration) error
	header string

	latency, jitter time.Duration
	failRate        float64
	hangRate        float64
	hangFor         time.Duration
	resetRate       float64
	honourKey       bool
	rejectEvery     int64
	rateLimit       int
	now             func() time.Time

	// downUntil is when playing down ends (Unix nanoseconds; 0: up).
	downUntil atomic.Int64

	// mu guards the rate limiter's window (the admission times of the last
	// second, oldest first) and the accepted-rate figures.
	mu             sync.Mutex
	window         []time.Time
	firstAccepted  time.Time
	lastAccepted   time.Time
	acceptedInRate int64

	auth auth

	before, after []stage
	mux           *http.ServeMux
	events        *Events
}

// New returns the handler of a sink recording into l. Without WithRand the
// random source is seeded from the clock.
func New(l *ledger.Ledger, opts ...Option) *Server {
	s := &Server{
		ledger: l,
		log:    slog.New(slog.DiscardHandler),
		sleep:  sleepCtx,
		header: DefaultIdempotencyHeader,
		now:    time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	if s.rand == nil {
		s.rand = NewRand(uint64(time.Now().UnixNano()))
	}
	// A destination that is down or over its rate answers at once, before
	// any work.
	s.before = append(s.before, s.down)
	if s.rateLimit > 0 {
		s.before = append(s.before, s.throttle)
	}
	if s.latency > 0 || s.jitter > 0 {
		s.before = append(s.before, s.delay)
	}
	if s.failRate > 0 {
		s.before = append(s.before, s.fail)
	}
	if s.rejectEvery > 0 {
		s.before = append(s.before, s.refuse)
	}
	if s.hangRate > 0 || s.resetRate > 0 {
		s.after = append(s.after, s.disrupt)
	}

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, answer{Status: "ok"}) })
	s.mux.HandleFunc("GET /stats", s.stats)
	s.mux.HandleFunc("GET /transactions", s.transactions)
	s.mux.HandleFunc("POST /reset", s.forget)
	s.mux.HandleFunc("POST /down", s.goDown)
	s.mux.HandleFunc("GET /refused", s.refused)
	s.mux.HandleFunc("GET /failed", s.failed)
	if s.auth.tokens != nil {
		s.mux.HandleFunc("POST /oauth2/token", s.issueToken)
	}
	if s.auth.keys.Load() != nil {
		s.mux.HandleFunc("POST /admin/signing-secrets", s.setSecrets)
	}
	// Job events from the dispatchers' events webhook, not transactions.
	s.events = newEvents()
	s.mux.HandleFunc("POST /events", s.events.record)
	s.mux.HandleFunc("GET /events", s.events.list)
	// Every other POST is a transaction, whatever its path, as the
	// destination URL of a dispatcher may carry any path.
	s.mux.HandleFunc("POST /", s.transaction)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// answer is the tiny JSON every endpoint but /stats and /transactions
// returns.
type answer struct {
	// ID is the sink's reference for an applied transaction, also in the
	// Location header, as payment APIs answer.
	ID      string `json:"id,omitempty"`
	Status  string `json:"status,omitempty"`
	Applied int64  `json:"applied,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) transaction(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			err = fmt.Errorf("body larger than %d bytes", tooBig.Limit)
		}
		s.ledger.Rejected("")
		writeJSON(w, http.StatusBadRequest, answer{Error: err.Error()})
		return
	}
	if !s.authenticate(w, r, body) {
		return
	}
	c, err := decode(bytes.NewReader(body))
	if err != nil {
		s.ledger.Rejected(c.Job)
		s.log.DebugContext(r.Context(), "transaction rejected", "job", c.Job, "reason", err.Error())
		writeJSON(w, http.StatusBadRequest, answer{Error: err.Error()})
		return
	}
	c.Key = r.Header.Get(s.header)
	for _, st := range s.before {
		if !st(w, r, &c) {
			return
		}
	}
	var ref string
	if s.honourKey {
		var applied bool
		c.Applied, ref, applied = s.ledger.ApplyOnce(c.Job, c.Row, c.Key)
		s.traced(r, c)
		if !applied {
			// Answered as the first time was, and spared the after-apply
			// stages: nothing was applied that could be left unknown.
			s.log.DebugContext(r.Context(), "transaction deduplicated", "job", c.Job, "row", c.Row)
			referred(w, ref)
			writeJSON(w, http.StatusOK, answer{ID: ref, Status: "deduplicated", Applied: c.Applied})
			return
		}
	} else {
		c.Applied, ref = s.ledger.Apply(c.Job, c.Row, c.Key)
		s.traced(r, c)
	}
	s.log.DebugContext(r.Context(), "transaction applied", "job", c.Job, "row", c.Row, "applied", c.Applied)
	s.accepted()
	for _, st := range s.after {
		if !st(w, r, &c) {
			return
		}
	}
	referred(w, ref)
	writeJSON(w, http.StatusOK, answer{ID: ref, Status: "applied", Applied: c.Applied})
}

// referred names the transaction's reference in the Location header.
func referred(w http.ResponseWriter, ref string) {
	if ref != "" {
		w.Header().Set("Location", "/payments/"+ref)
	}
}

// traced records the request's traceparent against its row, when it has
// one.
func (s *Server) traced(r *http.Request, c Call) {
	if tp := r.Header.Get("traceparent"); tp != "" {
		s.ledger.Traced(c.Job, c.Row, tp)
	}
}

// decode reads the transaction's identity from body. It returns the job id
// it found even with an error, so rejections are counted against the job.
func decode(body io.Reader) (Call, error) {
	var in struct {
		JobID *string         `json:"spool_job_id"`
		Row   json.RawMessage `json:"spool_row"`
	}
	if err := json.NewDecoder(body).Decode(&in); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Call{}, fmt.Errorf("body larger than %d bytes", tooBig.Limit)
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return Call{}, fmt.Errorf("%s has the wrong type", typ.Field)
		}
		return Call{}, errors.New("body is not a JSON object")
	}
	var c Call
	if in.JobID == nil || *in.JobID == "" {
		return c, errors.New("spool_job_id missing")
	}
	c.Job = *in.JobID
	if len(in.Row) == 0 || string(in.Row) == "null" {
		return c, errors.New("spool_row missing")
	}
	// A JSON number only: a quoted row is a client bug worth surfacing.
	row, err := strconv.ParseInt(string(in.Row), 10, 64)
	if err != nil || row < 1 {
		return c, errors.New("spool_row must be a positive integer")
	}
	c.Row = row
	return c, nil
}
