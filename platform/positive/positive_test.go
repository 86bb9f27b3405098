package positive

import (
	"testing"
	"time"
)

func TestOr(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v, want time.Duration
	}{
		{"unset takes the default", 0, 5 * time.Second},
		{"negative takes the default", -time.Second, 5 * time.Second},
		{"set is kept", time.Millisecond, time.Millisecond},
		{"set above the default is kept", time.Minute, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Or(tc.v, 5*time.Second); got != tc.want {
				t.Errorf("Or(%v, 5s) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

func TestOrInts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v, want int
	}{
		{"unset", 0, 10},
		{"negative", -1, 10},
		{"one", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Or(tc.v, 10); got != tc.want {
				t.Errorf("Or(%d, 10) = %d, want %d", tc.v, got, tc.want)
			}
		})
	}
}
