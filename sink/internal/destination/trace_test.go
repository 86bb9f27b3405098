package destination

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/sink/internal/ledger"
)

func TestTransactionsKeepTheLastTraceparentOfEachRow(t *testing.T) {
	srv, _ := newSink(t)
	const first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const second = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
	// ref is the reference of each row's last answer.
	ref := map[int64]string{}
	for _, c := range []struct {
		row int64
		tp  string
	}{{1, first}, {2, ""}, {1, second}} {
		h := http.Header{}
		if c.tp != "" {
			h.Set("traceparent", c.tp)
		}
		id, _ := post(t, srv, "/", tx("a", c.row), h).body["id"].(string)
		ref[c.row] = id
	}
	require.Equal(t, []ledger.Transaction{
		{Job: "a", Row: 1, Applied: 2, Traceparent: second, Reference: ref[1]},
		{Job: "a", Row: 2, Applied: 1, Reference: ref[2]},
	}, listTransactions(t, srv, "?job=a"))
}
