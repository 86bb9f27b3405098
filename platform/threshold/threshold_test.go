package threshold

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestCheck(t *testing.T) {
	rate := func(r float64, min int64) *spoolv1.FailureThreshold {
		return &spoolv1.FailureThreshold{MaxFailureRate: r, MinSettled: min}
	}
	count := func(n int64) *spoolv1.FailureThreshold { return &spoolv1.FailureThreshold{MaxFailures: proto.Int64(n)} }
	tests := []struct {
		name   string
		t      *spoolv1.FailureThreshold
		f      Figures
		want   bool
		reason string
	}{
		{name: "no threshold", t: nil, f: Figures{Settled: 100, Failed: 100}},
		{name: "empty threshold", t: &spoolv1.FailureThreshold{}, f: Figures{Settled: 100, Failed: 100}},
		{name: "rate below", t: rate(0.02, 0), f: Figures{Settled: 100, Failed: 1}},
		{name: "rate exactly at the limit is not over it", t: rate(0.02, 0), f: Figures{Settled: 100, Failed: 2}},
		{name: "rate over", t: rate(0.02, 0), f: Figures{Settled: 100, Failed: 5}, want: true,
			reason: "failure rate 5.0% over 100 settled rows exceeds 2%"},
		{name: "rate over but too few settled (default minimum)", t: rate(0.02, 0), f: Figures{Settled: 49, Failed: 10}},
		{name: "rate over at the default minimum", t: rate(0.02, 0), f: Figures{Settled: 50, Failed: 2}, want: true,
			reason: "failure rate 4.0% over 50 settled rows exceeds 2%"},
		{name: "configured minimum", t: rate(0.02, 200), f: Figures{Settled: 199, Failed: 50}},
		{name: "configured minimum reached", t: rate(0.02, 200), f: Figures{Settled: 200, Failed: 5}, want: true,
			reason: "failure rate 2.5% over 200 settled rows exceeds 2%"},
		{name: "fractional percent", t: rate(0.005, 10), f: Figures{Settled: 1000, Failed: 6}, want: true,
			reason: "failure rate 0.6% over 1000 settled rows exceeds 0.5%"},
		{name: "fractional percent exactly", t: rate(0.005, 10), f: Figures{Settled: 1000, Failed: 5}},
		{name: "count below", t: count(10), f: Figures{Settled: 20, Failed: 10}},
		{name: "count over, no minimum", t: count(10), f: Figures{Settled: 11, Failed: 11}, want: true,
			reason: "11 failed rows exceed the limit of 10"},
		{name: "zero failures tolerated", t: count(0), f: Figures{Settled: 1, Failed: 1}, want: true,
			reason: "1 failed rows exceed the limit of 0"},
		{name: "count checked before rate", t: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(3), MaxFailureRate: 0.5},
			f: Figures{Settled: 100, Failed: 4}, want: true, reason: "4 failed rows exceed the limit of 3"},
		{name: "no settled rows", t: rate(0.02, 1), f: Figures{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, crossed := Check(tt.t, tt.f)
			require.Equal(t, tt.want, crossed)
			require.Equal(t, tt.reason, reason)
		})
	}
}

func TestOf(t *testing.T) {
	j := &spoolv1.Job{Delivered: 90, Failed: 3, DeadLettered: 2, Unknown: 1, DuplicateRows: 4, Retries: 50, DuplicatesSuppressed: 7}
	require.Equal(t, Figures{Settled: 100, Failed: 5}, Of(j))
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "2%", want: 0.02},
		{in: " 0.5% ", want: 0.005},
		{in: "0.02", want: 0.02},
		{in: "0", want: 0},
		{in: "2", wantErr: true},
		{in: "100%", wantErr: true},
		{in: "-1%", wantErr: true},
		{in: "two", wantErr: true},
		{in: "NaN", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.InDelta(t, tt.want, got, 1e-12)
		})
	}
}

func TestMergeAndUpdate(t *testing.T) {
	profile := &spoolv1.FailureThreshold{MaxFailures: proto.Int64(10), MaxFailureRate: 0.05, MinSettled: 100}
	header := &spoolv1.FailureThreshold{MaxFailureRate: 0.02}
	tests := []struct {
		name string
		got  *spoolv1.FailureThreshold
		want *spoolv1.FailureThreshold
	}{
		{name: "neither", got: Merge(nil, nil), want: nil},
		{name: "profile only", got: Merge(nil, profile), want: profile},
		{name: "header over profile, field by field", got: Merge(header, profile),
			want: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(10), MaxFailureRate: 0.02, MinSettled: 100}},
		{name: "update rate only", got: Update(profile, nil, proto.Float64(0.2), nil),
			want: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(10), MaxFailureRate: 0.2, MinSettled: 100}},
		{name: "update removes count", got: Update(profile, proto.Int64(-1), nil, proto.Int64(0)),
			want: &spoolv1.FailureThreshold{MaxFailureRate: 0.05}},
		{name: "update of none", got: Update(nil, proto.Int64(3), nil, nil),
			want: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got, protocmp.Transform()); diff != "" {
				t.Errorf("threshold (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	require.NoError(t, Validate(nil))
	require.NoError(t, Validate(&spoolv1.FailureThreshold{MaxFailures: proto.Int64(0), MaxFailureRate: 0.02}))
	require.Error(t, Validate(&spoolv1.FailureThreshold{MaxFailures: proto.Int64(-1)}))
	require.Error(t, Validate(&spoolv1.FailureThreshold{MaxFailureRate: 2}))
	require.Error(t, Validate(&spoolv1.FailureThreshold{MinSettled: -3}))
}

func TestDescribe(t *testing.T) {
	require.Equal(t, "none", Describe(nil))
	require.Equal(t, "more than 10 failed rows or more than 2% of at least 50 settled rows",
		Describe(&spoolv1.FailureThreshold{MaxFailures: proto.Int64(10), MaxFailureRate: 0.02}))
}
