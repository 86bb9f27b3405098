package destination

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func getEvents(tb testing.TB, url string) EventList {
	tb.Helper()
	resp, err := http.Get(url)
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, http.StatusOK, resp.StatusCode)
	var l EventList
	require.NoError(tb, json.NewDecoder(resp.Body).Decode(&l))
	return l
}

func TestEventsRecordsEachIDOnceAndCountsArrivals(t *testing.T) {
	srv, _ := newSink(t)
	a := `{"id":"j1/job.completed","kind":"job.completed","job_id":"j1"}`
	b := `{"id":"j2/job.paused/1","kind":"job.paused","job_id":"j2"}`
	for _, body := range []string{a, b, a} {
		require.Equal(t, http.StatusOK, post(t, srv, "/events", body, nil).code)
	}
	l := getEvents(t, srv.URL+"/events")
	require.Equal(t, int64(3), l.Posts)
	require.Len(t, l.Events, 2)
	require.Equal(t, "j1/job.completed", l.Events[0].ID)
	require.Equal(t, int64(2), l.Events[0].Received)
	require.Equal(t, int64(1), l.Events[1].Received)
	require.JSONEq(t, a, string(l.Events[0].Event))

	one := getEvents(t, srv.URL+"/events?job_id=j2")
	require.Len(t, one.Events, 1)
	require.Equal(t, "job.paused", one.Events[0].Kind)

	// Transactions are not events, and a reset forgets both.
	require.Equal(t, http.StatusOK, post(t, srv, "/", tx("j1", 1), nil).code)
	require.Len(t, getEvents(t, srv.URL+"/events").Events, 2)
	require.Equal(t, http.StatusOK, post(t, srv, "/reset", "", nil).code)
	require.Empty(t, getEvents(t, srv.URL+"/events").Events)
}

func TestEventsRefusesWhatIsNotAnEvent(t *testing.T) {
	srv, _ := newSink(t)
	for name, tc := range map[string]struct {
		body string
		hdr  http.Header
	}{
		"not json":         {body: "nope"},
		"no id":            {body: `{"kind":"job.completed"}`},
		"header disagrees": {body: `{"id":"a"}`, hdr: http.Header{"Webhook-Id": {"b"}}},
	} {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, http.StatusBadRequest, post(t, srv, "/events", tc.body, tc.hdr).code)
		})
	}
	require.Zero(t, getEvents(t, srv.URL+"/events").Posts)
}
