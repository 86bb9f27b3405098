package csvread

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A limit left zero, or set negative by mistake, must not reject every
// row: both take the default, and a limit that is set is kept.
func TestLimitsWithDefaults(t *testing.T) {
	defaults := Limits{
		MaxFieldBytes:  DefaultMaxFieldBytes,
		MaxRecordBytes: DefaultMaxRecordBytes,
		MaxHeaderBytes: DefaultMaxHeaderBytes,
		MaxColumns:     DefaultMaxColumns,
		MaxRows:        DefaultMaxRows,
	}
	for _, tc := range []struct {
		name string
		in   Limits
		want Limits
	}{
		{"zero", Limits{}, defaults},
		{"negative", Limits{MaxFieldBytes: -1, MaxRecordBytes: -1, MaxHeaderBytes: -1, MaxColumns: -1, MaxRows: -1}, defaults},
		{"set", Limits{MaxFieldBytes: 1, MaxRecordBytes: 2, MaxHeaderBytes: 3, MaxColumns: 4, MaxRows: 5}, Limits{MaxFieldBytes: 1, MaxRecordBytes: 2, MaxHeaderBytes: 3, MaxColumns: 4, MaxRows: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.in.WithDefaults())
		})
	}
}
