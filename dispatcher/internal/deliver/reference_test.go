package deliver_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/deliver/delivertest"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/reference"
)

func TestSendCapturesReference(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/payments/loc-"+r.Header.Get("Idempotency-Key"))
		if r.URL.Query().Get("long") != "" {
			_, _ = w.Write([]byte(`{"id":"` + strings.Repeat("x", 300) + `"}`))
			return
		}
		_, _ = w.Write([]byte(`{"id":"body-` + r.Header.Get("Idempotency-Key") + `","status":"applied"}`))
	}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name      string
		dest      string
		query     string
		profile   string
		want      string
		truncated bool
	}{
		{name: "none configured", want: ""},
		{name: "destination's body pointer", dest: "body:/id", want: "body-job-1:1"},
		{name: "destination's header", dest: "header:Location", want: "/payments/loc-job-1:1"},
		{name: "profile's spec overrides the destination's", dest: "body:/id", profile: "header:Location", want: "/payments/loc-job-1:1"},
		{name: "a bad profile spec falls back", dest: "body:/id", profile: "nonsense", want: "body-job-1:1"},
		{name: "a long reference is cut", dest: "body:/id", query: "?long=1", want: strings.Repeat("x", reference.MaxLen), truncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, err := reference.Parse(tt.dest)
			require.NoError(t, err)
			c := deliver.New(deliver.Options{URL: srv.URL + tt.query, Timeout: 5 * time.Second, ReferenceFrom: from})
			e := envelope(1, "a", "b")
			e.ReferenceFrom = tt.profile
			got, err := c.Send(t.Context(), e)
			require.NoError(t, err)
			require.Equal(t, deliver.Receipt{Reference: tt.want, Truncated: tt.truncated}, got)
		})
	}
}

func TestRenderIsWhatSendSends(t *testing.T) {
	dest := delivertest.New(t, nil)
	c := deliver.New(deliver.Options{
		URL: dest.URL + "/v1/payments", Timeout: 5 * time.Second, IdempotencyHeader: "X-Key",
		Header: http.Header{"Authorization": {"Bearer s3cret"}, "X-Tenant": {"acme"}},
	})
	e := envelope(4, "employee", "E4", "amount", "10.00")

	got, err := c.Render(e)
	require.NoError(t, err)
	_, err = c.Send(t.Context(), e)
	require.NoError(t, err)

	require.Equal(t, int64(4), got.GetRow())
	require.Equal(t, http.MethodPost, got.GetMethod())
	seen := dest.Only()
	require.Equal(t, dest.URL+"/v1/payments", got.GetUrl())
	require.Equal(t, "/v1/payments", seen.Path)
	require.Equal(t, seen.Body, got.GetBody())
	headers := map[string]string{}
	for _, h := range got.GetHeaders() {
		headers[h.GetName()] = h.GetValue()
	}
	require.Equal(t, map[string]string{
		"Authorization": deliver.Redacted, "X-Tenant": deliver.Redacted,
		"Content-Type": "application/json", "X-Key": "job-1:4",
	}, headers)
	for name, v := range headers {
		if v != deliver.Redacted {
			require.Equal(t, seen.Header.Get(name), v, name)
		}
	}
	require.Equal(t, "Bearer s3cret", seen.Header.Get("Authorization"))
}

func TestRenderRedactsURLCredentials(t *testing.T) {
	c := deliver.New(deliver.Options{URL: "https://user:pw@pay.example/v1", Timeout: time.Second})
	got, err := c.Render(&spoolv1.Envelope{JobId: "j", Row: 1, TransactionKey: "j:1"})
	require.NoError(t, err)
	require.Equal(t, "https://REDACTED@pay.example/v1", got.GetUrl())

	// A query may carry a credential too (an API key): the caller, who
	// may only submit, does not see it.
	c = deliver.New(deliver.Options{URL: "https://pay.example/v1?api_key=s3cret", Timeout: time.Second})
	got, err = c.Render(&spoolv1.Envelope{JobId: "j", Row: 1, TransactionKey: "j:1"})
	require.NoError(t, err)
	require.Equal(t, "https://pay.example/v1?REDACTED", got.GetUrl())
}
