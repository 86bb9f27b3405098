package top

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Screen shows one frame of lines after another.
type Screen interface {
	Show(lines func(width int) []string) error
	// Close leaves the output as a person would want to find it.
	Close() error
}

// Size reports the terminal's width and height, ok false when the output
// is not a terminal.
type Size func() (width, height int, ok bool)

// NewScreen returns the screen for w: redrawn in place when size finds a
// terminal, plain lines otherwise (a pipe, a file, a log).
func NewScreen(w io.Writer, size Size) Screen {
	if _, _, ok := size(); ok {
		return &ttyScreen{w: w, size: size}
	}
	return &plainScreen{w: w}
}

// ANSI sequences of the terminal screen.
const (
	hideCursor = "\x1b[?25l"
	showCursor = "\x1b[?25h"
	home       = "\x1b[H"
	clearLine  = "\x1b[K"
	clearBelow = "\x1b[J"
	clearAll   = "\x1b[2J"
)

// ttyScreen redraws each frame over the last: cursor home, each line
// cleared to its end, the rest of the screen cleared. Drawing over the
// old frame instead of clearing the screen first keeps it from flickering.
type ttyScreen struct {
	w       io.Writer
	size    Size
	started bool
}

func (s *ttyScreen) Show(lines func(width int) []string) error {
	width, height, ok := s.size()
	if !ok {
		width, height = 80, 24
	}
	ls := lines(width)
	// The last line stays empty: a frame as tall as the terminal would
	// scroll it by one line on every redraw.
	if height > 1 && len(ls) > height-1 {
		more := len(ls) - (height - 2)
		ls = append(ls[:height-2:height-2], cut(fmt.Sprintf("(%d more lines; a taller terminal shows them)", more), width))
	}
	var b strings.Builder
	if !s.started {
		b.WriteString(hideCursor + clearAll)
		s.started = true
	}
	b.WriteString(home)
	for _, l := range ls {
		b.WriteString(l + clearLine + "\r\n")
	}
	b.WriteString(clearBelow)
	_, err := io.WriteString(s.w, b.String())
	return err
}

func (s *ttyScreen) Close() error {
	if !s.started {
		return nil
	}
	_, err := io.WriteString(s.w, showCursor)
	return err
}

// plainScreen writes each frame as plain lines, a blank line between
// frames, with no width limit: whatever reads them wraps or cuts.
type plainScreen struct {
	w      io.Writer
	frames int
}

func (s *plainScreen) Show(lines func(width int) []string) error {
	var b strings.Builder
	if s.frames > 0 {
		b.WriteString("\n")
	}
	s.frames++
	for _, l := range lines(0) {
		b.WriteString(l + "\n")
	}
	_, err := io.WriteString(s.w, b.String())
	return err
}

func (s *plainScreen) Close() error { return nil }

// Run shows a snapshot every interval until ctx is done, or one when once
// is set. The next snapshot is taken an interval after the last was
// shown, so a slow fleet slows the view instead of piling calls up. The
// screen is closed (the cursor shown again) however Run ends.
func Run(ctx context.Context, c *Collector, screen Screen, interval time.Duration, once bool) (err error) {
	defer func() {
		if cerr := screen.Close(); err == nil {
			err = cerr
		}
	}()
	for {
		snap := c.Collect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := screen.Show(func(width int) []string { return Render(snap, width) }); err != nil {
			return fmt.Errorf("show the fleet: %w", err)
		}
		if once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
