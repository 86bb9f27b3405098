package delivertest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deliver/delivertest"
)

// The destination records a request whole and answers with the reply it
// was given.
func TestDestinationRecordsAndReplies(t *testing.T) {
	d := delivertest.New(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusAccepted) })
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, d.URL+"/pay", strings.NewReader(`{"a":1}`))
	require.NoError(t, err)
	req.Header.Set("X-Key", "k1")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusAccepted, res.StatusCode)

	got := d.Only()
	require.Equal(t, http.MethodPut, got.Method)
	require.Equal(t, "/pay", got.Path)
	require.Equal(t, "k1", got.Header.Get("X-Key"))
	require.Equal(t, `{"a":1}`, got.Body)
}
