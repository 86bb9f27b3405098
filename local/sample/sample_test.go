package sample

import (
	"bytes"
	"encoding/csv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteIsValidCSV(t *testing.T) {
	var a, b bytes.Buffer
	require.NoError(t, Write(&a, 500, 7))
	require.NoError(t, Write(&b, 500, 7))
	require.Equal(t, a.String(), b.String(), "same seed, same file")

	recs, err := csv.NewReader(bytes.NewReader(a.Bytes())).ReadAll()
	require.NoError(t, err)
	require.Len(t, recs, 501)
	require.Equal(t, Columns, recs[0])
	quoted := 0
	for _, r := range recs[1:] {
		require.Len(t, r, len(Columns))
		if bytes.ContainsAny([]byte(r[1]), `,"`) {
			quoted++
		}
	}
	require.Positive(t, quoted, "the sample exercises quoting")
}
