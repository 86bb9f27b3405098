// Package compare judges figures measured on two checkouts of the repo, a
// base commit and the head, in rounds that alternate between them, so that
// a change can show it made nothing slower.
//
// The rule: each side's figure is the median of its rounds; the ratio is
// head's median over base's. The noise is the larger of the two sides'
// spreads (the range between a side's rounds over its median), and at
// least a floor, since two rounds say little about the spread. A ratio
// within 1 ± noise is within noise; beyond it the head is slower or faster,
// as the figure's direction says. One round has no spread and is not
// judged.
package compare

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spoolhq/spool/bench/internal/report"
)

// Figure is one compared figure and where each side reports it.
type Figure struct {
	// Name says what was measured; Unit what it counts.
	Name, Unit string
	// Lower is true when less is better (a time), false when more is (a
	// rate).
	Lower bool
	// BaseMetric and HeadMetric are the benchmark metrics the figure is
	// read from on each side ("" for a figure that is not a Go benchmark
	// metric): a metric renamed between the commits is mapped here.
	BaseMetric, HeadMetric string
	// Gauge says why the figure is shown but not judged: it measures the
	// machine (an emulator alone), which tells whether the machine drifted
	// between the sides, not whether the code is slower.
	Gauge string
}

// Verdict is how the head's figure compares with the base's.
type Verdict string

// The verdicts.
const (
	WithinNoise Verdict = "within noise"
	Slower      Verdict = "slower beyond noise"
	Faster      Verdict = "faster beyond noise"
	Unjudged    Verdict = "not judged: one round has no spread"
)

// Judgement is a figure's comparison.
type Judgement struct {
	Base, Head float64 // the medians
	Ratio      float64 // Head / Base
	Noise      float64 // the relative tolerance the ratio was held to
	Verdict    Verdict
}

// Judge compares a figure's rounds on each side, the noise being at least
// minNoise.
func Judge(base, head []float64, lower bool, minNoise float64) (Judgement, error) {
	if len(base) == 0 || len(head) == 0 {
		return Judgement{}, fmt.Errorf("no rounds (base %d, head %d)", len(base), len(head))
	}
	j := Judgement{Base: Median(base), Head: Median(head)}
	if j.Base <= 0 || j.Head <= 0 {
		return Judgement{}, fmt.Errorf("medians must be above 0 (base %g, head %g)", j.Base, j.Head)
	}
	j.Ratio = j.Head / j.Base
	if len(base) < 2 || len(head) < 2 {
		j.Verdict = Unjudged
		return j, nil
	}
	j.Noise = max(Spread(base), Spread(head), minNoise)
	// The head is worse when its time is longer or its rate lower.
	worse := (j.Ratio > 1) == lower
	switch {
	case j.Ratio >= 1-j.Noise && j.Ratio <= 1+j.Noise:
		j.Verdict = WithinNoise
	case worse:
		j.Verdict = Slower
	default:
		j.Verdict = Faster
	}
	return j, nil
}

// Row is the figure's line in the benchmark table: the head's median
// against the base's, each with its rounds, and the ratio bounded by the
// noise on the worse side, so that a figure slower beyond noise fails the
// table as a ratio out of its bound does.
func (f Figure) Row(baseName string, base, head []float64, minNoise float64) (report.Row, error) {
	j, err := Judge(base, head, f.Lower, minNoise)
	if err != nil {
		return report.Row{}, fmt.Errorf("%s: %w", f.Name, err)
	}
	r := report.Row{
		Name: f.Name, Value: j.Head, Unit: f.Unit, Rounds: head,
		Baseline: j.Base, BaselineName: baseName, BaselineRounds: base,
	}
	switch {
	case f.Gauge != "":
		r.Unchecked = f.Gauge
	case j.Verdict == Unjudged:
		r.Unchecked = "one round has no spread to judge by"
	default:
		if f.Lower {
			r.Max = 1 + j.Noise
		} else {
			r.Min = 1 - j.Noise
		}
		r.Note = fmt.Sprintf("%s (± %.1f %%)", j.Verdict, 100*j.Noise)
	}
	return r, nil
}

// Median is the middle of xs, or the mean of its two middles.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Spread is the range of xs over their median: how far apart rounds of
// the same code on the same machine came out.
func Spread(xs []float64) float64 {
	m := Median(xs)
	if len(xs) < 2 || m == 0 {
		return 0
	}
	return (slices.Max(xs) - slices.Min(xs)) / m
}

// Rule states the verdict's rule for the table's header.
func Rule(minNoise float64) string {
	return strings.Join([]string{
		"figure and baseline are the medians of each side's rounds (shown beside them);",
		fmt.Sprintf("within noise when head/base is within 1 ± the larger side's spread between its rounds (range / median), at least %.0f %%", 100*minNoise),
	}, " ")
}
