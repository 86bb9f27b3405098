package ledger

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// A reason longer than MaxReason keeps MaxReason bytes at most, whole
// runes only: a cut inside a rune drops that rune's bytes.
func TestBound(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int // bytes kept
	}{
		{name: "short", in: "503 Service Unavailable", want: 23},
		{name: "exactly the limit", in: strings.Repeat("a", MaxReason), want: MaxReason},
		{name: "cut between runes", in: strings.Repeat("é", MaxReason), want: MaxReason},
		{name: "cut inside a rune", in: "a" + strings.Repeat("é", MaxReason), want: MaxReason - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bound(tt.in)
			if len(got) != tt.want || !utf8.ValidString(got) || !strings.HasPrefix(tt.in, got) {
				t.Fatalf("bound kept %d bytes (valid %t, a prefix %t), want %d", len(got), utf8.ValidString(got), strings.HasPrefix(tt.in, got), tt.want)
			}
		})
	}
}
