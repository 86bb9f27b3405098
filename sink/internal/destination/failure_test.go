package destination

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/testkit"
)

func TestRejectEveryRefusesTheSameRows(t *testing.T) {
	srv, l := newSink(t, WithRejectEvery(50))
	for row := int64(1); row <= 200; row++ {
		want := http.StatusOK
		if row%50 == 0 {
			want = http.StatusUnprocessableEntity
		}
		require.Equal(t, want, post(t, srv, "/", tx("a", row), nil).code, "row %d", row)
	}
	require.Equal(t, http.StatusUnprocessableEntity, post(t, srv, "/", tx("a", 100), nil).code, "refused again, never applied")
	s := getStats(t, srv, "?job=a")
	require.EqualValues(t, 196, s.Distinct)
	require.EqualValues(t, 5, s.Refused)
	require.EqualValues(t, 4, s.RefusedRows)
	require.Equal(t, map[int64]int64{50: 1, 100: 2, 150: 1, 200: 1}, l.RefusedRows("a"))

	resp, err := srv.Client().Get(srv.URL + "/refused?job=a")
	require.NoError(t, err)
	defer resp.Body.Close()
	var got map[string]int64
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.Equal(t, map[string]int64{"50": 1, "100": 2, "150": 1, "200": 1}, got)
}

func TestFailedListsTheRowsAnsweredWithAnInjectedFailure(t *testing.T) {
	srv, _ := newSink(t, WithFailRate(0.5), WithRand(NewRand(7)))
	want := map[string]int64{}
	for r := int64(1); r <= 40; r++ {
		if post(t, srv, "/", tx("a", r), nil).code == http.StatusServiceUnavailable {
			want[strconv.FormatInt(r, 10)]++
		}
	}
	require.NotEmpty(t, want)

	resp, err := srv.Client().Get(srv.URL + "/failed?job=a")
	require.NoError(t, err)
	defer resp.Body.Close()
	var got map[string]int64
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.Equal(t, want, got)
}

func TestRateLimitAnswers429AboveTheRate(t *testing.T) {
	clk := testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	srv, _ := newSink(t, WithRateLimit(3), WithClock(clk.Now))
	codes := func(n int) []int {
		var out []int
		for i := range n {
			r := post(t, srv, "/", tx("a", int64(i+1)), nil)
			out = append(out, r.code)
		}
		return out
	}
	require.Equal(t, []int{200, 200, 200, 429, 429}, codes(5))
	clk.Advance(500 * time.Millisecond)
	require.Equal(t, []int{429}, codes(1), "the window slides: the first three are still within a second")
	clk.Advance(500 * time.Millisecond)
	require.Equal(t, []int{200, 200, 200, 429}, codes(4))

	s := getStats(t, srv, "?job=a")
	require.EqualValues(t, 4, s.Throttled)
}

func TestRateLimitSaysRetryAfter(t *testing.T) {
	srv, _ := newSink(t, WithRateLimit(1))
	post(t, srv, "/", tx("a", 1), nil)
	resp, err := srv.Client().Post(srv.URL+"/", "application/json", strings.NewReader(tx("a", 2)))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
}

func TestDownAnswers503ForAWhile(t *testing.T) {
	clk := testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	srv, _ := newSink(t, WithClock(clk.Now))
	require.Equal(t, http.StatusOK, post(t, srv, "/down?for=30s", "", nil).code)
	require.Equal(t, http.StatusServiceUnavailable, post(t, srv, "/", tx("a", 1), nil).code)
	clk.Advance(29 * time.Second)
	require.Equal(t, http.StatusServiceUnavailable, post(t, srv, "/", tx("a", 1), nil).code)
	clk.Advance(time.Second)
	require.Equal(t, http.StatusOK, post(t, srv, "/", tx("a", 1), nil).code)

	require.Equal(t, http.StatusOK, post(t, srv, "/down?for=1h", "", nil).code)
	require.Equal(t, http.StatusOK, post(t, srv, "/down?for=0s", "", nil).code, "for=0s brings it back up")
	require.Equal(t, http.StatusOK, post(t, srv, "/", tx("a", 2), nil).code)
	require.Equal(t, http.StatusBadRequest, post(t, srv, "/down?for=soon", "", nil).code)

	s := getStats(t, srv, "?job=a")
	require.EqualValues(t, 2, s.Down)
	require.EqualValues(t, 2, s.Distinct)
}

func TestAcceptedRate(t *testing.T) {
	clk := testkit.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	srv, _ := newSink(t, WithClock(clk.Now))
	for row := int64(1); row <= 11; row++ {
		post(t, srv, "/", tx("a", row), nil)
		clk.Advance(100 * time.Millisecond)
	}
	resp, err := srv.Client().Get(srv.URL + "/stats")
	require.NoError(t, err)
	defer resp.Body.Close()
	var got statsAnswer
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.InDelta(t, 1.0, got.AcceptedSeconds, 1e-9)
	require.InDelta(t, 10.0, got.AcceptedPerSecond, 1e-9)
}
