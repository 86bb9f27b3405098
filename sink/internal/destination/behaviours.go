package destination

// The pipeline's stages (down, throttled, refused, delayed, failed, hung,
// reset), the control endpoints that steer them, and the read endpoints
// tests use (stats, transactions, refused and failed rows).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spoolhq/spool/sink/internal/ledger"
)

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
	// Auth counts what the required authentication refused and passed.
	Auth AuthStats `json:"auth"`
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	span := s.lastAccepted.Sub(s.firstAccepted).Seconds()
	n := s.acceptedInRate
	s.mu.Unlock()
	a := statsAnswer{AcceptedSeconds: span, Auth: s.authStats()}
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
	s.events.reset()
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
