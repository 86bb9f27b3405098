package envelope_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/envelope"
)

func TestTransactionKey(t *testing.T) {
	hash := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return "bk:" + hex.EncodeToString(h[:])
	}
	tests := []struct {
		name  string
		job   string
		row   int64
		bk    []string
		want  string
		other []string // business-key values that must give another key
	}{
		{name: "job and row", job: "j1", row: 42, want: "j1:42"},
		{name: "empty business key is job and row", job: "j1", row: 7, bk: []string{}, want: "j1:7"},
		{name: "one column", job: "j1", row: 1, bk: []string{"E1"}, want: hash("2:E1")},
		{name: "values are length-prefixed", job: "j1", row: 1, bk: []string{"a", "bc"}, want: hash("1:a2:bc"), other: []string{"ab", "c"}},
		{name: "empty value counts", job: "j1", row: 1, bk: []string{"", "x"}, want: hash("0:1:x"), other: []string{"x", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := envelope.TransactionKey(tt.job, tt.row, tt.bk)
			require.Equal(t, tt.want, got)
			if len(tt.bk) > 0 {
				require.Equal(t, got, envelope.TransactionKey("another job", 99, tt.bk), "the same transaction in another file has the same key")
			}
			if tt.other != nil {
				require.NotEqual(t, got, envelope.TransactionKey(tt.job, tt.row, tt.other))
			}
		})
	}
}

func TestLedgerKey(t *testing.T) {
	const tx = "bk:00ff"
	tests := []struct {
		name string
		ns   envelope.Namespace
		want string
	}{
		{name: "no namespace keeps the former key", want: tx},
		{name: "destination", ns: envelope.Namespace{Destination: "pay.example.com/v1"}, want: "ns:|pay.example.com/v1|" + tx},
		{name: "tenant and destination", ns: envelope.Namespace{Tenant: "acme", Destination: "pay.example.com/v1"}, want: "ns:acme|pay.example.com/v1|" + tx},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.ns.LedgerKey(tx)
			require.Equal(t, tt.want, got)
			require.Equal(t, tx, envelope.TransactionKeyOf(got), "the transaction key is recovered")
			require.NotContains(t, seen, got, "each namespace has keys of its own")
			seen[got] = tt.name
		})
	}
	// Two destinations, two tenants: the same business key is four
	// transactions.
	keys := map[string]bool{}
	for _, ns := range []envelope.Namespace{{Destination: "a"}, {Destination: "b"}, {Tenant: "t1", Destination: "a"}, {Tenant: "t2", Destination: "a"}} {
		keys[ns.LedgerKey(tx)] = true
	}
	require.Len(t, keys, 4)
	for _, other := range []string{"dup:job-1:4", "job-1:4", "ns:broken"} {
		require.Equal(t, other, envelope.TransactionKeyOf(other))
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{name: "acme", ok: true},
		{name: "pay.example.com:8443/v1/payments", ok: true},
		{name: ""},
		{name: "a|b"},
		{name: "a\nb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.ok, envelope.CheckName(tt.name) == nil)
		})
	}
}
