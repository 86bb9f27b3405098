package gobench

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	out := `goos: linux
BenchmarkIngestRSS
    bench_test.go:80: ingested 10000 rows
BenchmarkIngestRSS-2   	       1	91234567890 ns/op	        31.50 rss-10k-MiB	      2480 rows/s-10k	        33.10 rss-1M-MiB	        1.051 rss-ratio
PASS
`
	m, err := Parse(strings.NewReader(out))
	require.NoError(t, err)
	require.Equal(t, map[string]float64{
		"ns/op": 91234567890, "rss-10k-MiB": 31.5, "rows/s-10k": 2480, "rss-1M-MiB": 33.1, "rss-ratio": 1.051,
	}, m)

	_, err = Parse(strings.NewReader("FAIL\n"))
	require.Error(t, err)
}
