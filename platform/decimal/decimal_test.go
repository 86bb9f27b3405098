package decimal

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"12", true}, {"-3.50", true}, {"+.5", true}, {"7.", true},
		{"", false}, {"-", false}, {".", false}, {"1e3", false}, {"1/3", false},
		{"1,000", false}, {" 1", false}, {"1.2.3", false}, {"0x10", false},
		{"-+0", false}, {"+-1", false}, {"--1", false}, // found by FuzzValidate
	} {
		require.Equal(t, tc.want, Valid(tc.in), tc.in)
	}
}

func TestSum(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start string
		terms []string
		want  string
	}{
		{"no float error", "", []string{"0.1", "0.2"}, "0.3"},
		{"keeps the finest scale", "10.50", []string{"0.25", "-1"}, "9.75"},
		{"integers", "", []string{"1", "2"}, "3"},
		{"zero", "", nil, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(tc.start)
			require.NoError(t, err)
			for _, x := range tc.terms {
				require.NoError(t, s.Add(x))
			}
			require.Equal(t, tc.want, s.String())
		})
	}
	s, err := Parse("1.5")
	require.NoError(t, err)
	require.ErrorContains(t, s.Add("1e3"), "not a decimal")
	require.Equal(t, "1.5", s.String(), "a refused term leaves the sum alone")
	_, err = Parse("abc")
	require.Error(t, err)
}

func TestTotal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		amounts []string
		want    string
	}{
		{"nothing is zero", nil, "0"},
		{"exact, at the finest scale", []string{"0.1", "0.20"}, "0.30"},
		{"blank amounts count as nothing", []string{"5", "", "  ", " 2.5 "}, "7.5"},
		{"amounts not decimal are left out and counted", []string{"1", "1e3", "abc", "2"}, "3 (2 amounts not decimal, left out)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sum Total
			for _, a := range tc.amounts {
				sum.Add(a)
			}
			require.Equal(t, tc.want, sum.String())
		})
	}
}
