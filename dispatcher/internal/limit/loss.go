package limit

import "math"

// How loss is judged. A destination's random failures are a binomial
// process: of n answers, a destination failing a share p at random fails
// about p·n, give or take √(p·n·(1−p)). Losses beyond lossSigmas of those
// (plus one, so a single loss is never news on its own) are more than
// chance explains, and are read as overload.
const (
	// lossSigmas is how many standard deviations above the usual count of
	// losses are still chance. Three keeps a destination's usual loss from
	// cutting the limit more than about once in a hundred windows.
	lossSigmas = 3
	// lossFloor is the usual loss assumed before any was measured, and
	// never assumed lower: a destination that has not failed yet may still
	// fail one request in a hundred without being overloaded.
	lossFloor = 0.01
	// lossLearning weighs a window's loss rate into the usual one: about
	// twenty windows, a few seconds, to learn a destination's usual loss,
	// slowly enough that a step in the error rate is judged against what
	// came before it.
	lossLearning = 0.05
)

// lossMeter counts the answers of the window under way and of the one
// before it, which it judges together: a window alone is too few answers to
// tell a step in the error rate from chance, and keeping the last window
// after a cut lets the next overload of a burst cut again at once, as the
// plain loss rule did.
type lossMeter struct {
	lost, n         int // the window under way
	prevLost, prevN int // the window before it
	// freshLost and freshN count the answers of the window under way to
	// requests sent after the limit last changed by a cut: what the
	// window's own limit met.
	freshLost, freshN int
	// usual is the loss rate of windows that closed without a cut, as a
	// moving average: what this destination fails when it is not
	// overloaded. windows counts them, up to the average's span.
	usual   float64
	windows int
}

// answered counts one answer that tells about load: an acceptance, or an
// overload when lost is true. fresh is false for a request sent before the
// limit was last cut.
func (m *lossMeter) answered(lost, fresh bool) {
	m.n++
	if fresh {
		m.freshN++
	}
	if lost {
		m.lost++
		if fresh {
			m.freshLost++
		}
	}
}

// unusual tells whether the losses of the last two windows are more than
// the usual rate explains.
func (m *lossMeter) unusual() bool {
	n := float64(m.n + m.prevN)
	return float64(m.lost+m.prevLost) > allowance(n, max(m.usual, lossFloor))
}

// allowance is how many of n answers a destination failing the share p at
// random may fail by chance.
func allowance(n, p float64) float64 {
	mean := p * n
	return mean + lossSigmas*math.Sqrt(mean*(1-p)) + 1
}

// closeWindow ends a window that ran its course without a cut, and learns
// from its fresh answers: losses of requests sent before a cut did not cut
// again, and must not pass for the usual rate either. The first windows
// are averaged evenly, so a destination's usual loss is known after a few
// round trips rather than twenty: until then every random loss beyond the
// floor's allowance would cut.
func (m *lossMeter) closeWindow() {
	if m.freshN > 0 {
		m.windows = min(m.windows+1, int(1/lossLearning))
		m.usual += (float64(m.freshLost)/float64(m.freshN) - m.usual) / float64(m.windows)
	}
	m.rotate()
}

// rotate starts a new window, keeping the one that ends for judging.
func (m *lossMeter) rotate() {
	m.prevLost, m.prevN = m.lost, m.n
	m.lost, m.n = 0, 0
	m.freshLost, m.freshN = 0, 0
}
