package top

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func notTerminal() (int, int, bool) { return 0, 0, false }

func terminal(w, h int) Size { return func() (int, int, bool) { return w, h, true } }

func TestScreenChoice(t *testing.T) {
	frame := func(width int) []string { return []string{fmt.Sprintf("width %d", width), "second"} }
	tests := []struct {
		name string
		size Size
		want string
	}{
		{
			name: "not a terminal: plain lines, no width limit, a blank line between frames",
			size: notTerminal,
			want: "width 0\nsecond\n\nwidth 0\nsecond\n",
		},
		{
			name: "terminal: hidden cursor, redrawn from home, cursor shown at the end",
			size: terminal(72, 24),
			want: hideCursor + clearAll +
				home + "width 72" + clearLine + "\r\nsecond" + clearLine + "\r\n" + clearBelow +
				home + "width 72" + clearLine + "\r\nsecond" + clearLine + "\r\n" + clearBelow +
				showCursor,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			s := NewScreen(&out, tt.size)
			require.NoError(t, s.Show(frame))
			require.NoError(t, s.Show(frame))
			require.NoError(t, s.Close())
			require.Equal(t, tt.want, out.String())
		})
	}
}

func TestTerminalFrameFitsItsHeight(t *testing.T) {
	var out bytes.Buffer
	s := NewScreen(&out, terminal(40, 5))
	require.NoError(t, s.Show(func(int) []string { return []string{"1", "2", "3", "4", "5", "6", "7"} }))
	frame := strings.TrimSuffix(strings.TrimPrefix(out.String(), hideCursor+clearAll+home), clearBelow)
	require.Equal(t, []string{"1", "2", "3", "(4 more lines; a taller terminal shows …", ""},
		strings.Split(strings.ReplaceAll(frame, clearLine, ""), "\r\n"))
}
