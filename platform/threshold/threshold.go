// Package threshold decides when a job's rows fail too often to go on: a
// count of failed rows, or a share of settled rows, after a minimum number
// of them. It is arithmetic only, shared by the dispatcher's gate (which
// pauses a job that crosses its threshold) and the job store (which resumes
// a job whose raised threshold is no longer crossed), so both read the
// figures the same way.
//
// A failure is a row the destination refused for good (REJECTED) or that
// was given up on after its retry budget (dead-lettered). A settled row is
// one with an outcome: delivered, failed, dead-lettered, UNKNOWN or a
// duplicate of another row. The figures are the job's summed counters, so
// they can lag the ledger by a counter flush per dispatcher but never lead
// it: every row counted did settle so.
package threshold

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// DefaultMinSettled is the settled rows a rate needs before it counts, so
// that one early refusal does not pause a job at 1 of 3.
const DefaultMinSettled = 50

// ppm is the rate's resolution: rates are compared as integers in parts
// per million, so 2 failures in 100 rows is exactly 2%, never above it by
// a float's rounding.
const ppm = 1_000_000

// Figures are the counts a threshold is checked against.
type Figures struct {
	Settled int64
	Failed  int64
}

// Of returns the job's figures.
func Of(j *spoolv1.Job) Figures {
	failed := j.GetFailed() + j.GetDeadLettered()
	return Figures{
		Settled: j.GetDelivered() + failed + j.GetUnknown() + j.GetDuplicateRows(),
		Failed:  failed,
	}
}

// Check says whether f crosses t, and why, in words for the job's pause
// reason. A nil or empty threshold is never crossed.
func Check(t *spoolv1.FailureThreshold, f Figures) (reason string, crossed bool) {
	if t == nil {
		return "", false
	}
	if t.MaxFailures != nil && f.Failed > t.GetMaxFailures() {
		return fmt.Sprintf("%d failed rows exceed the limit of %d", f.Failed, t.GetMaxFailures()), true
	}
	limit := ratePPM(t.GetMaxFailureRate())
	if limit <= 0 || f.Settled < MinSettled(t) || f.Settled == 0 {
		return "", false
	}
	if f.Failed*ppm > limit*f.Settled {
		observed := float64(f.Failed) / float64(f.Settled)
		return fmt.Sprintf("failure rate %s over %d settled rows exceeds %s",
			strconv.FormatFloat(observed*100, 'f', 1, 64)+"%", f.Settled, FormatRate(t.GetMaxFailureRate())), true
	}
	return "", false
}

// MinSettled is t's minimum of settled rows, the default when unset.
func MinSettled(t *spoolv1.FailureThreshold) int64 {
	if t.GetMinSettled() > 0 {
		return t.GetMinSettled()
	}
	return DefaultMinSettled
}

// Empty reports whether t limits nothing.
func Empty(t *spoolv1.FailureThreshold) bool {
	return t == nil || (t.MaxFailures == nil && t.GetMaxFailureRate() == 0)
}

func ratePPM(r float64) int64 { return int64(math.Round(r * ppm)) }

// Validate checks a threshold as a caller sent it.
func Validate(t *spoolv1.FailureThreshold) error {
	if t == nil {
		return nil
	}
	var errs []error
	if t.MaxFailures != nil && t.GetMaxFailures() < 0 {
		errs = append(errs, fmt.Errorf("max_failures %d is negative", t.GetMaxFailures()))
	}
	if r := t.GetMaxFailureRate(); math.IsNaN(r) || r < 0 || r >= 1 {
		errs = append(errs, fmt.Errorf("max_failure_rate %v is not a fraction from 0 up to 1 (0.02 is 2%%)", r))
	}
	if t.GetMinSettled() < 0 {
		errs = append(errs, fmt.Errorf("min_settled %d is negative", t.GetMinSettled()))
	}
	return errors.Join(errs...)
}

// Merge takes each field from over when set there, else from base: a
// stream's header over its profile's default. It returns nil when neither
// sets anything.
func Merge(over, base *spoolv1.FailureThreshold) *spoolv1.FailureThreshold {
	if over == nil && base == nil {
		return nil
	}
	if over == nil {
		over = &spoolv1.FailureThreshold{}
	}
	if base == nil {
		base = &spoolv1.FailureThreshold{}
	}
	t := &spoolv1.FailureThreshold{
		MaxFailures:    base.MaxFailures,
		MaxFailureRate: base.GetMaxFailureRate(),
		MinSettled:     base.GetMinSettled(),
	}
	if over.MaxFailures != nil {
		t.MaxFailures = over.MaxFailures
	}
	if over.GetMaxFailureRate() != 0 {
		t.MaxFailureRate = over.GetMaxFailureRate()
	}
	if over.GetMinSettled() != 0 {
		t.MinSettled = over.GetMinSettled()
	}
	if Empty(t) && t.MinSettled == 0 {
		return nil
	}
	return t
}

// Update applies a change of UpdateJob's kind to t: a field set in the
// change replaces t's (a negative max failures, or a zero rate, removes
// that limit; a zero minimum restores the default).
func Update(t *spoolv1.FailureThreshold, maxFailures *int64, maxRate *float64, minSettled *int64) *spoolv1.FailureThreshold {
	if t == nil {
		t = &spoolv1.FailureThreshold{}
	}
	n := &spoolv1.FailureThreshold{MaxFailures: t.MaxFailures, MaxFailureRate: t.GetMaxFailureRate(), MinSettled: t.GetMinSettled()}
	if maxFailures != nil {
		n.MaxFailures = nil
		if *maxFailures >= 0 {
			v := *maxFailures
			n.MaxFailures = &v
		}
	}
	if maxRate != nil {
		n.MaxFailureRate = *maxRate
	}
	if minSettled != nil {
		n.MinSettled = *minSettled
	}
	return n
}

// ParseRate reads a rate as people write it: "2%", "0.5%", or a fraction
// below 1 ("0.02").
func ParseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("failure rate %q: not a number, write it as 2%% or 0.02", s)
	}
	if pct {
		v /= 100
	}
	if v < 0 || v >= 1 {
		return 0, fmt.Errorf("failure rate %q: must be from 0 up to 100%% (excluded)", s)
	}
	return v, nil
}

// FormatRate writes a rate as a percentage with the digits it needs: 2%,
// 0.5%.
func FormatRate(r float64) string {
	return strconv.FormatFloat(r*100, 'f', -1, 64) + "%"
}

// Describe writes t for people: "more than 10 failed rows or 2% of at least
// 50 settled rows"; "none" when it limits nothing.
func Describe(t *spoolv1.FailureThreshold) string {
	if Empty(t) {
		return "none"
	}
	var parts []string
	if t.MaxFailures != nil {
		parts = append(parts, fmt.Sprintf("more than %d failed rows", t.GetMaxFailures()))
	}
	if t.GetMaxFailureRate() > 0 {
		parts = append(parts, fmt.Sprintf("more than %s of at least %d settled rows", FormatRate(t.GetMaxFailureRate()), MinSettled(t)))
	}
	return strings.Join(parts, " or ")
}
