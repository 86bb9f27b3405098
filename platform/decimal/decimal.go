// Package decimal sums amounts exactly. Money is never summed in floating
// point: 0.1 + 0.2 must be 0.3, and a control total must match to the cent
// over millions of rows.
package decimal

import (
	"fmt"
	"math/big"
	"strings"
)

// Valid reports whether s is a plain decimal: an optional sign, digits,
// and an optional fraction ("-12", "3.50", ".5"). Exponents, fractions
// like "1/3", thousands separators and spaces are refused, because a
// payroll amount written so is more likely a mistake than intended.
func Valid(s string) bool {
	// One sign at most: "-+0" is not a number.
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	digits := 0
	dot := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}

// scale is the number of digits after the point of a valid decimal.
func scale(s string) int {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}

// Sum is an exact running sum of decimals. The zero value is zero.
type Sum struct {
	v     big.Rat
	scale int
	term  big.Rat
}

// Parse returns a sum starting at s, a valid decimal (or "" for zero).
func Parse(s string) (*Sum, error) {
	var sum Sum
	if s == "" {
		return &sum, nil
	}
	if err := sum.Add(s); err != nil {
		return nil, err
	}
	return &sum, nil
}

// Add adds the decimal s, or fails without changing the sum.
func (m *Sum) Add(s string) error {
	if !Valid(s) {
		return fmt.Errorf("%q is not a decimal number", s)
	}
	if _, ok := m.term.SetString(s); !ok {
		return fmt.Errorf("%q is not a decimal number", s)
	}
	m.v.Add(&m.v, &m.term)
	m.scale = max(m.scale, scale(s))
	return nil
}

// String returns the sum with as many decimals as the most precise term,
// so it is exact: "10.50" + "0.25" is "10.75".
func (m *Sum) String() string { return m.v.FloatString(m.scale) }

// Total is the exact sum of amounts as written in a file, for reports:
// blank amounts count as nothing, and amounts that are not plain decimals
// are counted apart and named after the sum rather than failing it. The
// dispatcher's report and the CLI's results check each other with it, so
// both must add the same way. The zero value is zero.
type Total struct {
	sum     Sum
	invalid int
}

// Add adds one amount.
func (t *Total) Add(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	if t.sum.Add(s) != nil {
		t.invalid++
	}
}

// String is the sum with as many decimals as the most precise amount,
// followed by the count of amounts left out, if any.
func (t *Total) String() string {
	out := t.sum.String()
	if t.invalid > 0 {
		out += fmt.Sprintf(" (%d amounts not decimal, left out)", t.invalid)
	}
	return out
}
