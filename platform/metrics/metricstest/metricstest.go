// Package metricstest reads metrics back in tests: what a histogram
// observed, by the value of its label.
package metricstest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// SampleCount returns how many observations the histogram name, gathered
// from g, holds in its series whose first label is value. The test fails
// when there is no such series.
func SampleCount(tb testing.TB, g prometheus.Gatherer, name, value string) uint64 {
	tb.Helper()
	families, err := g.Gather()
	require.NoError(tb, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if s.GetLabel()[0].GetValue() == value {
				return s.GetHistogram().GetSampleCount()
			}
		}
	}
	tb.Fatalf("no series of %s for %s", name, value)
	return 0
}
