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
