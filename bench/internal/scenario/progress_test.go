package scenario

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSteadyRate(t *testing.T) {
	s := time.Second
	tests := []struct {
		name  string
		p     progress
		total int64
		want  float64
	}{
		{
			// A slow start and a long tail are left out: 10 % (100) at 2 s,
			// 90 % (900) at 6 s.
			name:  "ramp and tail left out",
			p:     progress{at: []time.Duration{0, 1 * s, 2 * s, 4 * s, 6 * s, 20 * s}, rows: []int64{0, 20, 100, 500, 900, 1000}},
			total: 1000, want: 200,
		},
		{name: "never reached 90 %", p: progress{at: []time.Duration{0, s}, rows: []int64{0, 500}}, total: 1000},
		{name: "all at once", p: progress{at: []time.Duration{0, s}, rows: []int64{0, 1000}}, total: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.InDelta(t, tt.want, tt.p.steadyRate(tt.total), 1e-9)
		})
	}
}

func TestIdeal(t *testing.T) {
	require.InDelta(t, 320, Delivery{Dispatchers: 4, Concurrency: 16, Latency: 200 * time.Millisecond}.Ideal(), 1e-9)
	require.Zero(t, Delivery{Dispatchers: 4, Concurrency: 16}.Ideal())
}
