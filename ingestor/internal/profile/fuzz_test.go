package profile

import (
	"bytes"
	"encoding/json"
	"math/big"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/ingestor/internal/csvread"
)

// FuzzValidate checks arbitrary rows against a profile with every column
// type. It must never panic; a row it accepts must give a body that is
// valid JSON whose amount has exactly the file's value; a value it accepts
// must be text SQS can carry once the reader checked it. Seeds are in
// testdata/fuzz/FuzzValidate. Run it with
//
//	go test -run '^$' -fuzz '^FuzzValidate$' -fuzztime 20s ./internal/profile/
func FuzzValidate(f *testing.F) {
	f.Add("E1", "10.50", "3", "2026-11-30", "EUR", "", "x")
	f.Add("E1", "+007.5", "-0", "2026-02-29", "USD", "note", "=1+1")
	f.Add("E", ".", "9223372036854775808", "2026-13-01", "eur", "éééééé", "@x")
	f.Add("E123", "-.10", "", "0001-01-01", "EUR", "\t", "-")
	f.Fuzz(func(t *testing.T, id, amount, count, day, currency, note, extra string) {
		v, err := Compile(payroll(t), payrollCols)
		require.NoError(t, err)
		fields := []string{id, amount, count, day, currency, note, extra}
		if bad := v.Row(1, fields); bad != nil {
			require.NotEmpty(t, bad.GetReason())
			require.NotEmpty(t, bad.GetColumn())
			// 32 characters at most, each escaped to at most 6, and the ellipsis.
			require.LessOrEqual(t, len([]rune(bad.GetExcerpt())), 6*32+1, "an excerpt is short")
			return
		}
		for _, f := range fields {
			if csvread.CheckText(f) != "" {
				return // the reader refuses such a row before the validator sees it
			}
		}
		body := v.Body(fields, Meta{JobID: "j", Row: 1, TransactionKey: "k"})
		require.True(t, json.Valid([]byte(body)), body)
		dec := json.NewDecoder(bytes.NewReader([]byte(body)))
		dec.UseNumber()
		var m map[string]any
		require.NoError(t, dec.Decode(&m))
		got, ok := new(big.Rat).SetString(string(m["amount"].(json.Number)))
		require.True(t, ok)
		want, ok := new(big.Rat).SetString(amount)
		require.True(t, ok, "an accepted amount is a number: %q", amount)
		require.Zero(t, got.Cmp(want), "amount %q sent as %s", amount, m["amount"])
		require.Equal(t, amount, m["amountText"])
	})
}
