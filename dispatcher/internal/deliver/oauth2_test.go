package deliver_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
)

const clientSecret = "s3cret-client-value"

// tokenServer is a client-credentials token endpoint issuing tok-1, tok-2,
// ... with the given lifetime, or failing with status (its body echoing
// the request, as careless servers do).
type tokenServer struct {
	*httptest.Server
	fetches  atomic.Int64
	lifetime time.Duration
	status   int
}

func newTokenServer(t *testing.T, lifetime time.Duration) *tokenServer {
	t.Helper()
	ts := &tokenServer{lifetime: lifetime}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id, secret, _ := r.BasicAuth()
		if ts.status != 0 {
			w.WriteHeader(ts.status)
			fmt.Fprintf(w, `{"error":"invalid_client","echo":%q}`, secret+" "+r.Form.Encode())
			return
		}
		if id != "spool" || secret != clientSecret || r.Form.Get("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		n := ts.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": fmt.Sprintf("tok-%d", n), "token_type": "Bearer", "expires_in": int(ts.lifetime / time.Second),
		})
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) cache(now func() time.Time) *deliver.OAuth2 {
	return deliver.NewOAuth2(deliver.OAuth2Options{TokenURL: ts.URL, ClientID: "spool", ClientSecret: clientSecret, Now: now})
}

func TestOAuth2RefreshesBeforeExpiry(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration
		// kept is the last moment the first token is still used; a second
		// later a new one is fetched.
		kept time.Duration
	}{
		{name: "short-lived: a fifth of its life early", lifetime: 100 * time.Second, kept: 79 * time.Second},
		{name: "long-lived: a minute early", lifetime: time.Hour, kept: 58*time.Minute + 59*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t, tt.lifetime)
			now := time.Now()
			clock := func() time.Time { return now }
			c := ts.cache(clock)
			for _, at := range []time.Duration{0, time.Second, tt.kept} {
				now = now.Add(at)
				tok, err := c.Token(t.Context())
				require.NoError(t, err)
				require.Equal(t, "tok-1", tok, "at %s", at)
				now = now.Add(-at)
			}
			now = now.Add(tt.kept + 2*time.Second)
			tok, err := c.Token(t.Context())
			require.NoError(t, err)
			require.Equal(t, "tok-2", tok)
			require.EqualValues(t, 2, ts.fetches.Load())
		})
	}
}

func TestOAuth2InvalidateOnlyTheCurrentToken(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	c := ts.cache(nil)
	first, err := c.Token(t.Context())
	require.NoError(t, err)
	c.Invalidate(first)
	second, err := c.Token(t.Context())
	require.NoError(t, err)
	require.NotEqual(t, first, second)
	// A request refused with the old token, answering late, must not
	// drop the new one.
	c.Invalidate(first)
	again, err := c.Token(t.Context())
	require.NoError(t, err)
	require.Equal(t, second, again)
	require.EqualValues(t, 2, ts.fetches.Load())
}

// destination accepts a bearer token unless it is refused, counting
// requests.
type destination struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	refused  map[string]bool
	seen     []string
}

func newDestination(t *testing.T, refuse func(token string) bool) *destination {
	t.Helper()
	d := &destination{}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.requests.Add(1)
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		d.mu.Lock()
		d.seen = append(d.seen, tok)
		d.mu.Unlock()
		if refuse(tok) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(d.Close)
	return d
}

func TestSendRefreshesOnceOn401(t *testing.T) {
	tests := []struct {
		name         string
		refuse       func(string) bool
		oauth        bool
		wantStatus   int // 0: delivered
		wantRequests int64
		wantFetches  int64
		wantTokens   []string
	}{
		{
			name: "a refused token is replaced and the request sent again", oauth: true,
			refuse:       func(tok string) bool { return tok == "tok-1" },
			wantRequests: 2, wantFetches: 2, wantTokens: []string{"tok-1", "tok-2"},
		},
		{
			name: "a second 401 is the answer", oauth: true,
			refuse:     func(string) bool { return true },
			wantStatus: http.StatusUnauthorized, wantRequests: 2, wantFetches: 2, wantTokens: []string{"tok-1", "tok-2"},
		},
		{
			name: "an accepted token is sent once", oauth: true,
			refuse:       func(string) bool { return false },
			wantRequests: 1, wantFetches: 1, wantTokens: []string{"tok-1"},
		},
		{
			name:       "without OAuth2 a 401 is not retried",
			refuse:     func(string) bool { return true },
			wantStatus: http.StatusUnauthorized, wantRequests: 1, wantTokens: []string{""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t, time.Hour)
			dest := newDestination(t, tt.refuse)
			o := deliver.Options{URL: dest.URL, Timeout: 5 * time.Second}
			if tt.oauth {
				o.Tokens = ts.cache(nil)
			}
			_, err := deliver.New(o).Send(t.Context(), envelope(1))
			if tt.wantStatus == 0 {
				require.NoError(t, err)
			} else {
				f, ok := deliver.IsFailure(err)
				require.True(t, ok, "%v", err)
				require.Equal(t, tt.wantStatus, f.Status)
			}
			require.Equal(t, tt.wantRequests, dest.requests.Load())
			require.Equal(t, tt.wantFetches, ts.fetches.Load())
			require.Equal(t, tt.wantTokens, dest.seen)
		})
	}
}

// A token endpoint that fails makes a failure that never left the machine,
// retryable, whose error carries neither the secret nor the endpoint's
// body.
func TestSendTokenEndpointFailure(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusUnauthorized} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			ts := newTokenServer(t, time.Hour)
			ts.status = status
			dest := newDestination(t, func(string) bool { return false })
			_, err := deliver.New(deliver.Options{URL: dest.URL, Timeout: 5 * time.Second, Tokens: ts.cache(nil)}).Send(t.Context(), envelope(1))
			f, ok := deliver.IsFailure(err)
			require.True(t, ok, "%v", err)
			require.False(t, f.Written)
			require.Zero(t, f.Status)
			require.Contains(t, err.Error(), fmt.Sprintf("token endpoint answered %d", status))
			require.NotContains(t, err.Error(), clientSecret)
			require.NotContains(t, err.Error(), "echo")
			require.Zero(t, dest.requests.Load())
		})
	}
}

// Requests that start together share one token fetch.
func TestSendConcurrentShareOneToken(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	dest := newDestination(t, func(string) bool { return false })
	c := deliver.New(deliver.Options{URL: dest.URL, Timeout: 5 * time.Second, MaxConns: 8, Tokens: ts.cache(nil)})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, err := c.Send(t.Context(), envelope(int64(i)))
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, ts.fetches.Load())
	require.EqualValues(t, 20, dest.requests.Load())
}

func TestRedactURL(t *testing.T) {
	tests := map[string]string{
		"https://api.example.com/pay":                      "https://api.example.com/pay",
		"https://api.example.com/pay?key=abc&x=1":          "https://api.example.com/pay?REDACTED",
		"https://user:pw@api.example.com/pay?sig=1#frag":   "https://user:xxxxx@api.example.com/pay?REDACTED",
		"http://127.0.0.1:8080/":                           "http://127.0.0.1:8080/",
		"https://api.example.com/pay?":                     "https://api.example.com/pay?REDACTED",
		"https://api.example.com/%zz?token=topsecretvalue": "(unparsable URL)",
	}
	for in, want := range tests {
		require.Equal(t, want, deliver.RedactURL(in), in)
	}
}

// The resend after a 401 shares the first request's timeout, so the whole
// delivery still fits the claim's lease; an answer lost on the resend is a
// request that may have been applied.
func TestSendResendSharesTheTimeout(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var calls atomic.Int64
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read to the end, so the server notices the client leaving.
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			time.Sleep(150 * time.Millisecond)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(dest.Close)
	const timeout = 400 * time.Millisecond
	start := time.Now()
	_, err := deliver.New(deliver.Options{URL: dest.URL, Timeout: timeout, Tokens: ts.cache(nil)}).Send(t.Context(), envelope(1))
	took := time.Since(start)
	f, ok := deliver.IsFailure(err)
	require.True(t, ok, "%v", err)
	require.True(t, f.Written, "the resend may have been applied")
	require.Zero(t, f.Status)
	require.EqualValues(t, 2, calls.Load())
	require.Less(t, took, timeout+200*time.Millisecond, "the resend got a timeout of its own")
}
