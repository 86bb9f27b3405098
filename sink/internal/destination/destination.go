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
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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

	before, after []stage
	mux           *http.ServeMux
}

// Option configures a Server.
type Option func(*Server)

// WithLatency delays every transaction request by fixed plus a uniformly
// random extra in [0, jitter], before anything else happens to it.
func WithLatency(fixed, jitter time.Duration) Option {
	return func(s *Server) { s.latency, s.jitter = fixed, jitter }
}

// WithFailRate answers that share of transaction requests (0..1) with 503
// before applying them, as a destination that is briefly overloaded would.
func WithFailRate(p float64) Option {
	return func(s *Server) { s.failRate = p }
}

// DefaultHangFor is how long WithHang holds an answer unless told: far
// longer than any sensible client timeout.
const DefaultHangFor = 30 * time.Second

// WithHang makes the sink apply that share of transaction requests (0..1)
// and then hold the answer for d (DefaultHangFor when d is 0), as a
// destination that committed a payment and then stalled would. The client
// times out first and cannot know the payment went through. When the client
// goes away the response is aborted; when it waited, it gets a 200.
func WithHang(p float64, d time.Duration) Option {
	return func(s *Server) {
		s.hangRate, s.hangFor = p, d
		if d == 0 {
			s.hangFor = DefaultHangFor
		}
	}
}

// WithReset makes the sink apply that share of transaction requests (0..1)
// and then reset the TCP connection (SO_LINGER 0) instead of answering. A
// client sees a connection reset after its request was written; Go's
// net/http replays such a request on its own when it carries an idempotency
// header and the connection was reused, which is exactly the hazard a
// client under a never-resend policy must guard against. Shares of WithHang
// and WithReset together must not exceed 1: one draw decides both.
func WithReset(p float64) Option {
	return func(s *Server) { s.resetRate = p }
}

// WithHonourKey makes the sink behave like a destination that honours the
// idempotency header: a request whose key was already applied is answered
// 200 without applying it again, and counted as deduplicated. Without it,
// such a request is applied again and counted as a duplicate.
func WithHonourKey(on bool) Option {
	return func(s *Server) { s.honourKey = on }
}

// WithRejectEvery answers 422 to every request for a row that is a
// multiple of n (n ≤ 0: none), before applying: a deterministic share of
// rows (1/n) the destination refuses for good, which tests can name.
func WithRejectEvery(n int64) Option {
	return func(s *Server) { s.rejectEvery = n }
}

// WithRateLimit answers 429 with Retry-After: 1 to a transaction request
// when perSecond requests were already admitted in the last second (a
// sliding window); 0 is no limit.
func WithRateLimit(perSecond int) Option {
	return func(s *Server) { s.rateLimit = perSecond }
}

// WithClock replaces time.Now for the rate limit and playing down.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// WithIdempotencyHeader names the header that carries a transaction's key.
func WithIdempotencyHeader(name string) Option {
	return func(s *Server) { s.header = name }
}

// WithRand sets the random source; tests pass a seeded one.
func WithRand(r Rand) Option {
	return func(s *Server) { s.rand = r }
}

// WithSleep replaces the wait used for latency, so tests need not wait.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(s *Server) { s.sleep = sleep }
}

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) { s.log = l }
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
	Status  string `json:"status,omitempty"`
	Applied int64  `json:"applied,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) transaction(w http.ResponseWriter, r *http.Request) {
	c, err := decode(http.MaxBytesReader(w, r.Body, maxBody))
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
	if s.honourKey {
		var applied bool
		c.Applied, applied = s.ledger.ApplyOnce(c.Job, c.Row, c.Key)
		s.traced(r, c)
		if !applied {
			// Answered as the first time was, and spared the after-apply
			// stages: nothing was applied that could be left unknown.
			s.log.DebugContext(r.Context(), "transaction deduplicated", "job", c.Job, "row", c.Row)
			writeJSON(w, http.StatusOK, answer{Status: "deduplicated", Applied: c.Applied})
			return
		}
	} else {
		c.Applied = s.ledger.Apply(c.Job, c.Row, c.Key)
		s.traced(r, c)
	}
	s.log.DebugContext(r.Context(), "transaction applied", "job", c.Job, "row", c.Row, "applied", c.Applied)
	s.accepted()
	for _, st := range s.after {
		if !st(w, r, &c) {
			return
		}
	}
	writeJSON(w, http.StatusOK, answer{Status: "applied", Applied: c.Applied})
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

// down is the stage of a destination that is down: 503 to everything
// until the window set by POST /down ends.
func (s *Server) down(w http.ResponseWriter, r *http.Request, c *Call) bool {
	until := s.downUntil.Load()
	if until == 0 || s.now().UnixNano() >= until {
		return true
	}
	s.ledger.Down(c.Job)
	writeJSON(w, http.StatusServiceUnavailable, answer{Error: "down"})
	return false
}

// throttle is the rate-limit stage: 429 with Retry-After: 1 once
// rateLimit requests were admitted in the last second.
func (s *Server) throttle(w http.ResponseWriter, r *http.Request, c *Call) bool {
	now := s.now()
	s.mu.Lock()
	cut := 0
	for cut < len(s.window) && now.Sub(s.window[cut]) >= time.Second {
		cut++
	}
	s.window = s.window[cut:]
	admit := len(s.window) < s.rateLimit
	if admit {
		s.window = append(s.window, now)
	}
	s.mu.Unlock()
	if admit {
		return true
	}
	s.ledger.Throttled(c.Job)
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusTooManyRequests, answer{Error: "rate limit exceeded"})
	return false
}

// refuse is the stage of rows refused for good: 422 to every request for a
// row that is a multiple of rejectEvery.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, c *Call) bool {
	if c.Row%s.rejectEvery != 0 {
		return true
	}
	n := s.ledger.Refused(c.Job, c.Row)
	s.log.DebugContext(r.Context(), "transaction refused", "job", c.Job, "row", c.Row, "requests", n)
	writeJSON(w, http.StatusUnprocessableEntity, answer{Error: fmt.Sprintf("row %d refused: invalid account", c.Row)})
	return false
}

// accepted notes an applied request for the accepted rate.
func (s *Server) accepted() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstAccepted.IsZero() {
		s.firstAccepted = now
	}
	s.lastAccepted = now
	s.acceptedInRate++
}

// goDown plays down (POST /down?for=30s): every transaction request is
// answered 503 until then. for=0s brings the sink back up.
func (s *Server) goDown(w http.ResponseWriter, r *http.Request) {
	d, err := time.ParseDuration(r.URL.Query().Get("for"))
	if err != nil || d < 0 {
		writeJSON(w, http.StatusBadRequest, answer{Error: "for: want a duration such as 30s"})
		return
	}
	until := int64(0)
	if d > 0 {
		until = s.now().Add(d).UnixNano()
	}
	s.downUntil.Store(until)
	s.log.InfoContext(r.Context(), "playing down", "for", d.String())
	writeJSON(w, http.StatusOK, answer{Status: "down for " + d.String()})
}

// refused lists the refused rows of a job (?job=ID) with the requests each
// got, as one JSON object {"row": requests}.
func (s *Server) refused(w http.ResponseWriter, r *http.Request) {
	writeRowCounts(w, s.ledger.RefusedRows(r.URL.Query().Get("job")))
}

// failed lists the rows of a job (?job=ID) answered with an injected
// failure, with the requests each got, like refused.
func (s *Server) failed(w http.ResponseWriter, r *http.Request) {
	writeRowCounts(w, s.ledger.FailedRows(r.URL.Query().Get("job")))
}

func writeRowCounts(w http.ResponseWriter, rows map[int64]int64) {
	out := make(map[string]int64, len(rows))
	for k, v := range rows {
		out[strconv.FormatInt(k, 10)] = v
	}
	writeJSON(w, http.StatusOK, out)
}

// delay is the latency stage.
func (s *Server) delay(w http.ResponseWriter, r *http.Request, c *Call) bool {
	d := s.latency
	if s.jitter > 0 {
		d += time.Duration(s.rand.Int64N(int64(s.jitter) + 1))
	}
	if err := s.sleep(r.Context(), d); err != nil {
		// The client gave up; nothing was applied and nobody listens.
		return false
	}
	return true
}

// fail is the injected-failure stage: it answers 503 before applying.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, c *Call) bool {
	if s.rand.Float64() >= s.failRate {
		return true
	}
	s.ledger.Failed(c.Job, c.Row)
	s.log.DebugContext(r.Context(), "failure injected", "job", c.Job, "row", c.Row)
	writeJSON(w, http.StatusServiceUnavailable, answer{Error: "injected failure"})
	return false
}

// disrupt is the after-apply stage: one draw decides whether the applied
// transaction's answer hangs, its connection is reset, or it is answered.
func (s *Server) disrupt(w http.ResponseWriter, r *http.Request, c *Call) bool {
	u := s.rand.Float64()
	switch {
	case u < s.hangRate:
		return s.hang(w, r, c)
	case u < s.hangRate+s.resetRate:
		s.reset(w, r, c)
		return false
	}
	return true
}

// hang holds the answer of an applied transaction for hangFor.
func (s *Server) hang(_ http.ResponseWriter, r *http.Request, c *Call) bool {
	s.ledger.Hung(c.Job)
	s.log.DebugContext(r.Context(), "answer held", "job", c.Job, "row", c.Row, "for", s.hangFor.String())
	if err := s.sleep(r.Context(), s.hangFor); err != nil {
		// The client gave up (or the sink is shutting down): abort the
		// response rather than complete it, so nobody sees a late 200.
		panic(http.ErrAbortHandler)
	}
	return true
}

// reset closes the connection of an applied transaction without an answer.
// SO_LINGER 0 makes the close send a TCP RST rather than a FIN, so the
// client reads "connection reset by peer", as when a destination's load
// balancer drops a connection mid-response.
func (s *Server) reset(w http.ResponseWriter, r *http.Request, c *Call) {
	s.ledger.ConnReset(c.Job)
	s.log.DebugContext(r.Context(), "connection reset", "job", c.Job, "row", c.Row)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 cannot hand over its connection; aborting the handler
		// resets the stream instead, which the client sees the same way.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// Best effort: without it the client sees an EOF, still no answer.
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// statsAnswer is the body of GET /stats.
type statsAnswer struct {
	Job string `json:"job,omitempty"`
	ledger.Stats
	// AcceptedPerSecond is the sink-wide rate of applied requests between
	// the first and the last one (0 before two); AcceptedSeconds is that
	// span.
	AcceptedPerSecond float64 `json:"accepted_per_second"`
	AcceptedSeconds   float64 `json:"accepted_seconds"`
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	span := s.lastAccepted.Sub(s.firstAccepted).Seconds()
	n := s.acceptedInRate
	s.mu.Unlock()
	a := statsAnswer{AcceptedSeconds: span}
	if span > 0 {
		// n requests span n-1 intervals.
		a.AcceptedPerSecond = float64(n-1) / span
	}
	if job := r.URL.Query().Get("job"); job != "" {
		a.Job, a.Stats = job, s.ledger.JobStats(job)
		writeJSON(w, http.StatusOK, a)
		return
	}
	a.Stats = s.ledger.Stats()
	writeJSON(w, http.StatusOK, a)
}

// transactions streams the transactions of one job (?job=ID), or of every
// job, as JSON lines in row order.
func (s *Server) transactions(w http.ResponseWriter, r *http.Request) {
	jobs := []string{r.URL.Query().Get("job")}
	if jobs[0] == "" {
		jobs = s.ledger.Jobs()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for _, job := range jobs {
		err := s.ledger.Each(job, func(t ledger.Transaction) error {
			if err := r.Context().Err(); err != nil {
				return err
			}
			return enc.Encode(t)
		})
		if err != nil {
			s.log.DebugContext(r.Context(), "transactions listing cut short", "job", job, "error", err)
			return
		}
	}
	if err := bw.Flush(); err != nil {
		s.log.DebugContext(r.Context(), "transactions listing cut short", "error", err)
	}
}

// forget empties the ledger (POST /reset).
func (s *Server) forget(w http.ResponseWriter, r *http.Request) {
	s.ledger.Reset()
	s.mu.Lock()
	s.firstAccepted, s.lastAccepted, s.acceptedInRate, s.window = time.Time{}, time.Time{}, 0, nil
	s.mu.Unlock()
	s.log.InfoContext(r.Context(), "ledger reset")
	writeJSON(w, http.StatusOK, answer{Status: "reset"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The client may be gone; there is nobody to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
