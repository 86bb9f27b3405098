package destination

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/sink/internal/ledger"
)

// newSink serves a sink over httptest for the rest of the test.
func newSink(tb testing.TB, opts ...Option) (*httptest.Server, *ledger.Ledger) {
	tb.Helper()
	l := ledger.New()
	opts = append([]Option{WithRand(NewRand(1))}, opts...)
	srv := httptest.NewServer(New(l, opts...))
	tb.Cleanup(srv.Close)
	return srv, l
}

type reply struct {
	code     int
	body     map[string]any
	location string
}

func post(tb testing.TB, srv *httptest.Server, path, body string, header http.Header) reply {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	require.NoError(tb, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := srv.Client().Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	r := reply{code: resp.StatusCode, location: resp.Header.Get("Location")}
	require.NoError(tb, json.NewDecoder(resp.Body).Decode(&r.body))
	return r
}

func tx(job string, row int64) string {
	return fmt.Sprintf(`{"employee":"x","amount":"1.00","spool_job_id":%q,"spool_row":%d}`, job, row)
}

func getStats(tb testing.TB, srv *httptest.Server, query string) ledger.Stats {
	tb.Helper()
	resp, err := srv.Client().Get(srv.URL + "/stats" + query)
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, http.StatusOK, resp.StatusCode)
	var s ledger.Stats
	require.NoError(tb, json.NewDecoder(resp.Body).Decode(&s))
	return s
}

func listTransactions(tb testing.TB, srv *httptest.Server, query string) []ledger.Transaction {
	tb.Helper()
	resp, err := srv.Client().Get(srv.URL + "/transactions" + query)
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, http.StatusOK, resp.StatusCode)
	require.Equal(tb, "application/x-ndjson", resp.Header.Get("Content-Type"))
	var out []ledger.Transaction
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var t ledger.Transaction
		require.NoError(tb, json.Unmarshal(sc.Bytes(), &t), "line %q", sc.Text())
		out = append(out, t)
	}
	require.NoError(tb, sc.Err())
	return out
}

func TestTransactionRequests(t *testing.T) {
	type send struct {
		body   string
		key    string
		path   string
		status int
		answer map[string]any
	}
	tests := []struct {
		name  string
		opts  []Option
		sends []send
		want  ledger.Stats
		rows  []ledger.Transaction
	}{
		{
			name:  "accepted",
			sends: []send{{body: tx("j1", 1), key: "k1", status: 200, answer: map[string]any{"status": "applied", "applied": 1.0}}},
			want:  ledger.Stats{Requests: 1, Distinct: 1},
			rows:  []ledger.Transaction{{Job: "j1", Row: 1, Applied: 1, Key: "k1"}},
		},
		{
			name: "duplicate is accepted and counted",
			sends: []send{
				{body: tx("j1", 1), key: "k1", status: 200},
				{body: tx("j1", 1), key: "k1", status: 200, answer: map[string]any{"status": "applied", "applied": 2.0}},
			},
			want: ledger.Stats{Requests: 2, Distinct: 1, Duplicates: 1},
			rows: []ledger.Transaction{{Job: "j1", Row: 1, Applied: 2, Key: "k1"}},
		},
		{
			name:  "any path is the destination",
			sends: []send{{body: tx("j1", 3), path: "/payments/v2", status: 200}},
			want:  ledger.Stats{Requests: 1, Distinct: 1},
			rows:  []ledger.Transaction{{Job: "j1", Row: 3, Applied: 1}},
		},
		{
			name:  "custom idempotency header",
			opts:  []Option{WithIdempotencyHeader("X-Request-Key")},
			sends: []send{{body: tx("j1", 1), key: "k1", status: 200}},
			want:  ledger.Stats{Requests: 1, Distinct: 1},
			// The default header was sent, not the configured one.
			rows: []ledger.Transaction{{Job: "j1", Row: 1, Applied: 1, Key: ""}},
		},
		{
			name: "honoured key is applied once",
			opts: []Option{WithHonourKey(true)},
			sends: []send{
				{body: tx("j1", 1), key: "k1", status: 200, answer: map[string]any{"status": "applied", "applied": 1.0}},
				{body: tx("j1", 1), key: "k1", status: 200, answer: map[string]any{"status": "deduplicated", "applied": 1.0}},
				{body: tx("j1", 1), key: "k2", status: 200, answer: map[string]any{"status": "applied", "applied": 2.0}},
			},
			want: ledger.Stats{Requests: 2, Distinct: 1, Duplicates: 1, Deduplicated: 1},
			rows: []ledger.Transaction{{Job: "j1", Row: 1, Applied: 2, Key: "k1", Deduplicated: 1}},
		},
		{
			name: "fail rate 1 never applies",
			opts: []Option{WithFailRate(1)},
			sends: []send{
				{body: tx("j1", 1), status: 503, answer: map[string]any{"error": "injected failure"}},
				{body: tx("j1", 1), status: 503},
				{body: tx("j1", 2), status: 503},
			},
			want: ledger.Stats{Failed: 3},
		},
		{
			name: "malformed bodies are rejected and not applied",
			sends: []send{
				{body: `not json`, status: 400, answer: map[string]any{"error": "body is not a JSON object"}},
				{body: `[1,2]`, status: 400},
				{body: `{"spool_row":1}`, status: 400, answer: map[string]any{"error": "spool_job_id missing"}},
				{body: `{"spool_job_id":"","spool_row":1}`, status: 400},
				{body: `{"spool_job_id":7,"spool_row":1}`, status: 400, answer: map[string]any{"error": "spool_job_id has the wrong type"}},
				{body: `{"spool_job_id":"j1"}`, status: 400, answer: map[string]any{"error": "spool_row missing"}},
				{body: `{"spool_job_id":"j1","spool_row":null}`, status: 400},
				{body: `{"spool_job_id":"j1","spool_row":"1"}`, status: 400, answer: map[string]any{"error": "spool_row must be a positive integer"}},
				{body: `{"spool_job_id":"j1","spool_row":1.5}`, status: 400},
				{body: `{"spool_job_id":"j1","spool_row":0}`, status: 400},
				{body: `{"spool_job_id":"j1","spool_row":1,"pad":"` + strings.Repeat("x", maxBody) + `"}`, status: 400},
			},
			want: ledger.Stats{Rejected: 11},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newSink(t, tt.opts...)
			for i, s := range tt.sends {
				h := http.Header{}
				if s.key != "" {
					h.Set(DefaultIdempotencyHeader, s.key)
				}
				path := s.path
				if path == "" {
					path = "/"
				}
				got := post(t, srv, path, s.body, h)
				require.Equal(t, s.status, got.code, "send %d: %v", i, got.body)
				if s.answer != nil {
					// References are keyed per sink process; see
					// TestAnswersIssueAReferencePerApplication.
					delete(got.body, "id")
					require.Equal(t, s.answer, got.body, "send %d", i)
				}
			}
			require.Equal(t, tt.want, getStats(t, srv, ""))
			rows := listTransactions(t, srv, "?job=j1")
			for i := range rows {
				rows[i].Reference = ""
			}
			require.Equal(t, tt.rows, rows)
		})
	}
}

func TestStatsAndTransactionsPerJob(t *testing.T) {
	srv, _ := newSink(t)
	// ref holds each answer's reference, in order: a2, a1, a2 again, b1.
	var ref []string
	for _, b := range []string{tx("a", 2), tx("a", 1), tx("a", 2), tx("b", 1), `{"spool_job_id":"b"}`} {
		id, _ := post(t, srv, "/", b, nil).body["id"].(string)
		ref = append(ref, id)
	}
	tests := []struct {
		query string
		want  ledger.Stats
		rows  []ledger.Transaction
	}{
		{query: "?job=a", want: ledger.Stats{Requests: 3, Distinct: 2, Duplicates: 1},
			rows: []ledger.Transaction{{Job: "a", Row: 1, Applied: 1, Reference: ref[1]}, {Job: "a", Row: 2, Applied: 2, Reference: ref[2]}}},
		{query: "?job=b", want: ledger.Stats{Requests: 1, Distinct: 1, Rejected: 1},
			rows: []ledger.Transaction{{Job: "b", Row: 1, Applied: 1, Reference: ref[3]}}},
		{query: "?job=unknown", want: ledger.Stats{}},
		{query: "", want: ledger.Stats{Requests: 4, Distinct: 3, Duplicates: 1, Rejected: 1},
			rows: []ledger.Transaction{
				{Job: "a", Row: 1, Applied: 1, Reference: ref[1]}, {Job: "a", Row: 2, Applied: 2, Reference: ref[2]},
				{Job: "b", Row: 1, Applied: 1, Reference: ref[3]},
			}},
	}
	for _, tt := range tests {
		t.Run("query "+tt.query, func(t *testing.T) {
			require.Equal(t, tt.want, getStats(t, srv, tt.query))
			require.Equal(t, tt.rows, listTransactions(t, srv, tt.query))
		})
	}
}

func TestAnswersIssueAReferencePerApplication(t *testing.T) {
	tests := []struct {
		name   string
		opts   []Option
		header http.Header
		// same says whether the three requests for one row get one
		// reference (deduplicated) or three.
		same bool
	}{
		{name: "every application a new one"},
		{
			name: "a deduplicated request gets the first", opts: []Option{WithHonourKey(true)},
			header: http.Header{DefaultIdempotencyHeader: {"k1"}}, same: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, l := newSink(t, tt.opts...)
			seen := map[string]bool{}
			var last string
			for range 3 {
				r := post(t, srv, "/", tx("j", 7), tt.header)
				require.Equal(t, http.StatusOK, r.code)
				id, _ := r.body["id"].(string)
				require.Regexp(t, `^pay_[0-9a-f]{20}$`, id)
				require.Equal(t, "/payments/"+id, r.location)
				seen[id], last = true, id
			}
			if tt.same {
				require.Len(t, seen, 1)
			} else {
				require.Len(t, seen, 3)
			}
			got, ok := l.Lookup("j", 7)
			require.True(t, ok)
			require.Equal(t, last, got.Reference)
			require.Equal(t, last, listTransactions(t, srv, "?job=j")[0].Reference)
		})
	}
}

func TestRefusalsIssueNoReference(t *testing.T) {
	srv, l := newSink(t, WithRejectEvery(2))
	r := post(t, srv, "/", tx("j", 2), nil)
	require.Equal(t, http.StatusUnprocessableEntity, r.code)
	require.Empty(t, r.location)
	require.NotContains(t, r.body, "id")
	_, ok := l.Lookup("j", 2)
	require.False(t, ok)
}

func TestStatsNamesTheJob(t *testing.T) {
	srv, _ := newSink(t)
	resp, err := srv.Client().Get(srv.URL + "/stats?job=a")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, map[string]any{"job": "a", "requests": 0.0, "distinct": 0.0, "duplicates": 0.0, "failed": 0.0, "rejected": 0.0,
		"deduplicated": 0.0, "hung": 0.0, "resets": 0.0, "refused": 0.0, "refused_rows": 0.0, "throttled": 0.0, "down": 0.0,
		"accepted_per_second": 0.0, "accepted_seconds": 0.0,
		"auth": map[string]any{"no_client_cert": 0.0, "unauthorized": 0.0, "tokens_issued": 0.0, "bad_signature": 0.0, "signed": 0.0}}, body)
}

func TestHealthResetAndMethods(t *testing.T) {
	srv, _ := newSink(t)
	post(t, srv, "/", tx("a", 1), nil)
	require.Equal(t, ledger.Stats{Requests: 1, Distinct: 1}, getStats(t, srv, ""))

	got := post(t, srv, "/reset", "", nil)
	require.Equal(t, http.StatusOK, got.code)
	require.Equal(t, ledger.Stats{}, getStats(t, srv, ""))
	require.Empty(t, listTransactions(t, srv, ""))

	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodGet, "/", http.StatusMethodNotAllowed},
		{http.MethodPut, "/", http.StatusMethodNotAllowed},
	} {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tt.want, resp.StatusCode, "%s %s", tt.method, tt.path)
	}
}

func TestFailRateIsReproducibleWithASeed(t *testing.T) {
	outcomes := func() []int {
		srv, l := newSink(t, WithFailRate(0.5), WithRand(NewRand(42)))
		var codes []int
		for r := int64(1); r <= 200; r++ {
			codes = append(codes, post(t, srv, "/", tx("j", r), nil).code)
		}
		s := l.Stats()
		require.Equal(t, int64(200), s.Requests+s.Failed)
		// Roughly half, with plenty of room: the seed makes it exact anyway.
		require.InDelta(t, 100, s.Failed, 30)
		return codes
	}
	require.Equal(t, outcomes(), outcomes())
}

func TestLatencyIsFixedPlusJitter(t *testing.T) {
	var mu sync.Mutex
	var waits []time.Duration
	sleep := func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return nil
	}
	srv, _ := newSink(t, WithLatency(10*time.Millisecond, 5*time.Millisecond), WithSleep(sleep))
	for r := int64(1); r <= 50; r++ {
		require.Equal(t, http.StatusOK, post(t, srv, "/", tx("j", r), nil).code)
	}
	require.Len(t, waits, 50)
	distinct := map[time.Duration]bool{}
	for _, d := range waits {
		require.GreaterOrEqual(t, d, 10*time.Millisecond)
		require.LessOrEqual(t, d, 15*time.Millisecond)
		distinct[d] = true
	}
	require.Greater(t, len(distinct), 1, "jitter must vary the delay")
}

func TestClientGivingUpDuringLatencyAppliesNothing(t *testing.T) {
	entered := make(chan struct{})
	sleep := func(ctx context.Context, d time.Duration) error {
		close(entered)
		<-ctx.Done()
		return ctx.Err()
	}
	srv, l := newSink(t, WithLatency(time.Hour, 0), WithSleep(sleep))
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(tx("j", 1)))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-entered
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	require.Equal(t, ledger.Stats{}, l.Stats())
}

func TestConcurrentRequestsAreCountedExactly(t *testing.T) {
	srv, l := newSink(t, WithFailRate(0.2))
	const workers, rows = 8, 100
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for r := int64(1); r <= rows; r++ {
				req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tx("j", r)))
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	s := l.Stats()
	require.Equal(t, int64(workers*rows), s.Requests+s.Failed)
	require.Equal(t, s.Requests-s.Distinct, s.Duplicates)
	var applied int64
	for _, tx := range listTransactions(t, srv, "?job=j") {
		applied += tx.Applied
	}
	require.Equal(t, s.Requests, applied)
	require.LessOrEqual(t, s.Distinct, int64(rows))
}

// seqRand returns its values in turn, so a test decides every draw.
type seqRand struct {
	mu   sync.Mutex
	vals []float64
}

func (r *seqRand) Float64() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.vals) == 0 {
		panic("seqRand: out of values")
	}
	v := r.vals[0]
	r.vals = r.vals[1:]
	return v
}

func (r *seqRand) Int64N(n int64) int64 { return int64(r.Float64() * float64(n)) }

func TestHangHoldsTheAnswerOfAnAppliedTransaction(t *testing.T) {
	t.Run("a client that waits gets its answer", func(t *testing.T) {
		var waits []time.Duration
		sleep := func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }
		srv, l := newSink(t, WithHang(1, 3*time.Second), WithSleep(sleep))
		got := post(t, srv, "/", tx("j", 1), nil)
		require.Equal(t, http.StatusOK, got.code)
		require.Regexp(t, `^pay_`, got.body["id"])
		delete(got.body, "id")
		require.Equal(t, map[string]any{"status": "applied", "applied": 1.0}, got.body)
		require.Equal(t, []time.Duration{3 * time.Second}, waits)
		require.Equal(t, ledger.Stats{Requests: 1, Distinct: 1, Hung: 1}, l.Stats())
	})
	t.Run("a client that times out never learns it was applied", func(t *testing.T) {
		srv, l := newSink(t, WithHang(1, time.Hour))
		client := srv.Client()
		client.Timeout = 100 * time.Millisecond
		resp, err := client.Post(srv.URL, "application/json", strings.NewReader(tx("j", 1)))
		if err == nil {
			resp.Body.Close()
		}
		require.ErrorContains(t, err, "Client.Timeout")
		require.Equal(t, ledger.Stats{Requests: 1, Distinct: 1, Hung: 1}, l.Stats())
	})
	t.Run("zero hang-for means the default", func(t *testing.T) {
		var waits []time.Duration
		sleep := func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }
		srv, _ := newSink(t, WithHang(1, 0), WithSleep(sleep))
		require.Equal(t, http.StatusOK, post(t, srv, "/", tx("j", 1), nil).code)
		require.Equal(t, []time.Duration{DefaultHangFor}, waits)
	})
}

// TestResetAppliesThenDropsTheConnection also pins down the hazard the
// dispatcher must guard against: Go's http.Transport replays a POST that
// carries an Idempotency-Key header when a reused connection is reset
// after the request was written, so a destination ignoring the key applies
// it twice without the caller ever seeing an error.
func TestResetAppliesThenDropsTheConnection(t *testing.T) {
	tests := []struct {
		name      string
		key       string
		honour    bool
		wantErr   bool
		want      ledger.Stats
		wantTwice bool
	}{
		{name: "without a key the client sees the reset", wantErr: true,
			want: ledger.Stats{Requests: 2, Distinct: 2, Resets: 1}},
		{name: "with a key the transport silently replays it", key: "k2", wantTwice: true,
			want: ledger.Stats{Requests: 3, Distinct: 2, Duplicates: 1, Resets: 1}},
		{name: "a destination honouring the key absorbs the replay", key: "k2", honour: true,
			want: ledger.Stats{Requests: 2, Distinct: 2, Resets: 1, Deduplicated: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Request 1 answered (its connection is then reused), request 2
			// reset; a replay, if any, is answered.
			draws := &seqRand{vals: []float64{0.9, 0.1, 0.9}}
			srv, l := newSink(t, WithReset(0.5), WithHonourKey(tt.honour), WithRand(draws))
			require.Equal(t, http.StatusOK, post(t, srv, "/", tx("j", 1), nil).code)

			req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tx("j", 2)))
			require.NoError(t, err)
			if tt.key != "" {
				req.Header.Set(DefaultIdempotencyHeader, tt.key)
			}
			resp, err := srv.Client().Do(req)
			if tt.wantErr {
				require.Error(t, err)
				require.Contains(t, err.Error(), "connection reset by peer")
			} else {
				require.NoError(t, err)
				resp.Body.Close()
				require.Equal(t, http.StatusOK, resp.StatusCode)
			}
			require.Equal(t, tt.want, l.Stats())
			got, ok := l.Lookup("j", 2)
			require.True(t, ok)
			require.Equal(t, tt.wantTwice, got.Applied == 2, "row 2 applied %d times", got.Applied)
		})
	}
}

func TestHonouredKeySkipsTheAfterApplyStages(t *testing.T) {
	// Draw 1 hangs the first request; a deduplicated request draws nothing.
	draws := &seqRand{vals: []float64{0.0}}
	sleep := func(ctx context.Context, d time.Duration) error { return nil }
	srv, l := newSink(t, WithHang(0.5, time.Hour), WithHonourKey(true), WithRand(draws), WithSleep(sleep))
	h := http.Header{DefaultIdempotencyHeader: {"k"}}
	require.Equal(t, http.StatusOK, post(t, srv, "/", tx("j", 1), h).code)
	got := post(t, srv, "/", tx("j", 1), h)
	first, ok := l.Lookup("j", 1)
	require.True(t, ok)
	require.Equal(t, map[string]any{"id": first.Reference, "status": "deduplicated", "applied": 1.0}, got.body)
	require.Equal(t, ledger.Stats{Requests: 1, Distinct: 1, Hung: 1, Deduplicated: 1}, l.Stats())
}

func TestHangAndResetSharesAreReproducibleWithASeed(t *testing.T) {
	outcomes := func() []string {
		sleep := func(ctx context.Context, d time.Duration) error { return nil }
		srv, l := newSink(t, WithHang(0.2, time.Hour), WithReset(0.1), WithSleep(sleep), WithRand(NewRand(7)))
		var got []string
		for r := int64(1); r <= 300; r++ {
			// A fresh connection per request: no transport replay muddles
			// the count.
			req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tx("j", r)))
			require.NoError(t, err)
			req.Close = true
			resp, err := srv.Client().Do(req)
			if err != nil {
				got = append(got, "error")
				continue
			}
			resp.Body.Close()
			got = append(got, resp.Status)
		}
		s := l.Stats()
		require.Equal(t, int64(300), s.Requests, "every request is applied before its fate")
		require.InDelta(t, 60, s.Hung, 25)
		require.InDelta(t, 30, s.Resets, 18)
		var errs int64
		for _, o := range got {
			if o == "error" {
				errs++
			}
		}
		require.Equal(t, s.Resets, errs)
		return got
	}
	require.Equal(t, outcomes(), outcomes())
}
