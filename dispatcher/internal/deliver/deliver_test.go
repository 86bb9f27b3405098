package deliver_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/deliver/delivertest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func envelope(row int64, fields ...string) *spoolv1.Envelope {
	e := &spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job-1", Row: row, TransactionKey: fmt.Sprintf("job-1:%d", row)}
	for i := 0; i+1 < len(fields); i += 2 {
		e.Fields = append(e.Fields, &spoolv1.Field{Name: fields[i], Value: fields[i+1]})
	}
	return e
}

func TestBody(t *testing.T) {
	tests := []struct {
		name string
		env  *spoolv1.Envelope
		want string
	}{
		{
			name: "column order kept",
			env:  envelope(7, "zeta", "1", "alpha", "2", "mid", "3"),
			want: `{"zeta":"1","alpha":"2","mid":"3","spool_job_id":"job-1","spool_row":7}`,
		},
		{
			name: "no fields",
			env:  envelope(1),
			want: `{"spool_job_id":"job-1","spool_row":1}`,
		},
		{
			name: "escaping",
			env:  envelope(12345678901, "na\"me", "a\\b\nc\t\u00e9", "amount", "<1&2>"),
			want: `{"na\"me":"a\\b\nc\té","amount":"\u003c1\u00262\u003e","spool_job_id":"job-1","spool_row":12345678901}`,
		},
		{
			name: "a profile's mapped body is sent as built",
			env: func() *spoolv1.Envelope {
				e := envelope(3, "amount", "10.50")
				e.Body = `{"amount":10.50,"ref":"k"}`
				return e
			}(),
			want: `{"amount":10.50,"ref":"k"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := deliver.Body(tt.env)
			require.Equal(t, tt.want, string(got))
			require.True(t, json.Valid(got))
		})
	}
}

func TestSend(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		keyHeader  string
		wantKeyHdr string
		wantStatus int // 0: success expected
	}{
		{name: "200 is delivered", status: http.StatusOK, wantKeyHdr: "Idempotency-Key"},
		{name: "204 is delivered", status: http.StatusNoContent, wantKeyHdr: "Idempotency-Key"},
		{name: "custom key header", status: http.StatusCreated, keyHeader: "X-Request-Key", wantKeyHdr: "X-Request-Key"},
		{name: "400 fails", status: http.StatusBadRequest, wantKeyHdr: "Idempotency-Key", wantStatus: 400},
		{name: "503 fails", status: http.StatusServiceUnavailable, wantKeyHdr: "Idempotency-Key", wantStatus: 503},
		{name: "redirect is not followed", status: http.StatusTemporaryRedirect, wantKeyHdr: "Idempotency-Key", wantStatus: 307},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := delivertest.New(t, func(w http.ResponseWriter) {
				if tt.status == http.StatusTemporaryRedirect {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, "refused")
			})

			c := deliver.New(deliver.Options{
				URL:               dest.URL,
				IdempotencyHeader: tt.keyHeader,
				Header:            http.Header{"Authorization": {"Bearer s3cret"}, "X-Tenant": {"acme"}},
				Timeout:           5 * time.Second,
				MaxConns:          4,
			})
			env := envelope(3, "employee", "E1", "amount", "10.00")
			env.TransactionKey = "job-1:3"
			_, err := c.Send(t.Context(), env)
			if tt.wantStatus == 0 {
				require.NoError(t, err)
			} else {
				f, ok := deliver.IsFailure(err)
				require.True(t, ok, "error %v is a failure", err)
				require.Equal(t, tt.wantStatus, f.Status)
				require.True(t, f.Written)
				require.Equal(t, "refused", f.Excerpt)
				require.NotContains(t, f.Error(), "refused", "the body may echo payroll data")
			}

			r := dest.Only()
			require.Equal(t, http.MethodPost, r.Method)
			require.Equal(t, `{"employee":"E1","amount":"10.00","spool_job_id":"job-1","spool_row":3}`, r.Body)
			require.Equal(t, "application/json", r.Header.Get("Content-Type"))
			require.Equal(t, "job-1:3", r.Header.Get(tt.wantKeyHdr))
			require.Equal(t, "Bearer s3cret", r.Header.Get("Authorization"))
			require.Equal(t, "acme", r.Header.Get("X-Tenant"))
		})
	}
}

func TestSendTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	c := deliver.New(deliver.Options{URL: srv.URL, Timeout: 100 * time.Millisecond, MaxConns: 1})
	_, err := c.Send(t.Context(), envelope(1, "a", "b"))
	f, ok := deliver.IsFailure(err)
	require.True(t, ok, "error %v is a failure", err)
	require.Zero(t, f.Status)
	require.Error(t, f.Err)
	require.True(t, f.Written, "the request reached the destination before the timeout")
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := deliver.New(deliver.Options{URL: url, Timeout: time.Second}).Send(t.Context(), envelope(1))
	f, ok := deliver.IsFailure(err)
	require.True(t, ok)
	require.Zero(t, f.Status)
	require.False(t, f.Written, "a refused dial never left the machine")
}

// TestNoReplay proves that a POST is not re-sent by the transport when the
// destination drops a reused keep-alive connection after reading the
// request: the destination may have moved the money already.
func TestNoReplay(t *testing.T) {
	var dropped atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		require.NoError(t, json.NewDecoder(r.Body).Decode(&body))
		if body[deliver.FieldRow] == float64(1) {
			// The first request opens the keep-alive connection.
			w.WriteHeader(http.StatusOK)
			return
		}
		dropped.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		require.NoError(t, err)
		require.NoError(t, conn.Close())
	}))
	t.Cleanup(srv.Close)

	c := deliver.New(deliver.Options{URL: srv.URL, Timeout: 5 * time.Second, MaxConns: 1})
	_, err := c.Send(t.Context(), envelope(1))
	require.NoError(t, err)
	// The default key header is what makes net/http consider a POST
	// replayable.
	_, err = c.Send(t.Context(), envelope(2))
	f, ok := deliver.IsFailure(err)
	require.True(t, ok, "error %v is a failure", err)
	require.Zero(t, f.Status)
	require.True(t, f.Written, "the dropped request may have been applied")
	require.EqualValues(t, 1, dropped.Load(), "requests received for row 2")
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		value string
		want  time.Duration
	}{
		{name: "absent", value: "", want: 0},
		{name: "seconds", value: "3", want: 3 * time.Second},
		{name: "seconds with spaces", value: " 120 ", want: 2 * time.Minute},
		{name: "zero seconds", value: "0", want: 0},
		{name: "negative seconds", value: "-5", want: 0},
		{name: "huge seconds are bounded", value: "99999999999999", want: 365 * 24 * time.Hour},
		{name: "http date", value: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second},
		{name: "past http date", value: now.Add(-time.Minute).Format(http.TimeFormat), want: 0},
		{name: "garbage", value: "soon", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, deliver.RetryAfter(tt.value, now))
		})
	}
}

func TestFailureCarriesRetryAfter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	_, err := deliver.New(deliver.Options{URL: srv.URL, Timeout: 5 * time.Second}).Send(t.Context(), envelope(1))
	f, ok := deliver.IsFailure(err)
	require.True(t, ok, "error %v is a failure", err)
	require.Equal(t, http.StatusTooManyRequests, f.Status)
	require.Equal(t, 7*time.Second, f.RetryAfter)
}
