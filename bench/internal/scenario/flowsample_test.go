package scenario

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseGauges(t *testing.T) {
	page := `# HELP spool_concurrency_limit The adaptive concurrency limit.
# TYPE spool_concurrency_limit gauge
spool_concurrency_limit 12
spool_concurrency_limit_other 99
spool_in_flight 7.5
spool_breaker_state{state="open"} 0
`
	tests := []struct {
		name    string
		names   []string
		want    map[string]float64
		wantErr string
	}{
		{
			name:  "unlabelled series by exact name",
			names: []string{"spool_concurrency_limit", "spool_in_flight"},
			want:  map[string]float64{"spool_concurrency_limit": 12, "spool_in_flight": 7.5},
		},
		{name: "a series missing", names: []string{"spool_rate_limit"}, wantErr: "no metric spool_rate_limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseGauges(strings.NewReader(page), tc.names...)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
