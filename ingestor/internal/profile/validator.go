package profile

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/platform/decimal"
)

// Meta is what Spool knows about a row, for BODY_META values.
type Meta struct {
	JobID          string
	Row            int64
	TransactionKey string
}

// Validator checks the rows of one file. It is not safe for concurrent use.
type Validator struct {
	profile *spoolv1.Profile // nil: no profile
	columns []string
	checks  []column // one per file column
	body    []bodyField
	buf     bytes.Buffer
}

// column is how one column of the file is checked.
type column struct {
	name     string
	spec     *spoolv1.ColumnSpec // nil: undeclared, a string
	pattern  *regexp.Regexp
	formulas spoolv1.FormulaPolicy
}

type bodyField struct {
	key      []byte // the member's name, JSON-encoded, with its colon
	col      int    // index of the column, or -1
	constant string
	meta     spoolv1.BodyMeta
	number   bool
}

// Compile returns the validator of a file with these columns under p,
// which may be nil (no profile: every column a string, formulas allowed,
// one invalid row rejects the file). The error is an *Error naming every
// declared column the file lacks and every other mismatch.
func Compile(p *spoolv1.Profile, columns []string) (*Validator, error) {
	v := &Validator{profile: p, columns: columns, checks: make([]column, len(columns))}
	formulas := p.GetFormulaPolicy()
	if formulas == spoolv1.FormulaPolicy_FORMULA_POLICY_UNSPECIFIED {
		formulas = spoolv1.FormulaPolicy_FORMULA_POLICY_REJECT
	}
	if p == nil {
		formulas = spoolv1.FormulaPolicy_FORMULA_POLICY_ALLOW
	}
	for i, c := range columns {
		v.checks[i] = column{name: c, formulas: formulas}
	}
	if p == nil {
		return v, nil
	}
	if err := Check(p); err != nil {
		return nil, err
	}
	var vs []Violation
	// missing reports a column once, whatever names it.
	reported := map[string]bool{}
	missing := func(c, how string) {
		if !reported[c] {
			reported[c] = true
			vs = append(vs, Violation{Field: "header.columns", Description: fmt.Sprintf("column %q %s profile %q is missing", c, how, p.GetName())})
		}
	}
	for _, spec := range p.GetColumns() {
		i := slices.Index(columns, spec.GetName())
		if i < 0 {
			reported[spec.GetName()] = true
			vs = append(vs, Violation{Field: "header.columns", Description: fmt.Sprintf("column %q of profile %q is missing", spec.GetName(), p.GetName())})
			continue
		}
		v.checks[i].spec = spec
		if spec.GetPattern() != "" {
			v.checks[i].pattern = regexp.MustCompile(`^(?:` + spec.GetPattern() + `)$`)
		}
	}
	if p.GetRejectExtraColumns() {
		for i, c := range v.checks {
			if c.spec == nil {
				vs = append(vs, Violation{Field: "header.columns", Description: fmt.Sprintf("column %d %q is not declared in profile %q", i+1, c.name, p.GetName())})
			}
		}
	}
	for _, c := range append(slices.Clone(p.GetBusinessKeyColumns()), p.GetAmountColumn()) {
		if c != "" && !slices.Contains(columns, c) {
			missing(c, "named by")
		}
	}
	for _, b := range p.GetBody() {
		key, _ := json.Marshal(b.GetName())
		f := bodyField{key: append(key, ':'), col: -1, constant: b.GetConstant(), meta: b.GetMeta(), number: b.GetAsNumber()}
		if c, ok := b.GetSource().(*spoolv1.BodyField_Column); ok {
			f.col = slices.Index(columns, c.Column)
			if f.col < 0 {
				missing(c.Column, "mapped by")
			}
		}
		v.body = append(v.body, f)
	}
	if len(vs) > 0 {
		return nil, &Error{Subject: "header", Violations: vs}
	}
	return v, nil
}

// Policy is what an invalid row does to the file.
func (v *Validator) Policy() spoolv1.RowPolicy {
	if v.profile.GetRowPolicy() == spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS {
		return spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS
	}
	return spoolv1.RowPolicy_ROW_POLICY_REJECT_FILE
}

// MapsBody reports whether rows are delivered as a mapped body.
func (v *Validator) MapsBody() bool { return len(v.body) > 0 }

// formulaStart is what starts a value a spreadsheet would run as a
// formula (OWASP's CSV injection list).
const formulaStart = "=+-@\t\r"

// Row checks one row, whose field count the reader already checked. It
// returns the first problem, or nil. Under FORMULA_POLICY_NEUTRALISE it
// rewrites the fields concerned in place.
func (v *Validator) Row(num int64, fields []string) *spoolv1.RowError {
	for i, c := range v.checks {
		val := fields[i]
		reason := c.check(val)
		if reason == "" && c.isText() && isFormula(val) {
			switch c.formulas {
			case spoolv1.FormulaPolicy_FORMULA_POLICY_REJECT:
				reason = fmt.Sprintf("value starts with %q, which a spreadsheet runs as a formula", val[:1])
			case spoolv1.FormulaPolicy_FORMULA_POLICY_NEUTRALISE:
				fields[i] = "'" + val
			}
		}
		if reason != "" {
			return &spoolv1.RowError{Row: num, Column: c.name, Reason: reason, Excerpt: csvread.Excerpt(val)}
		}
	}
	return nil
}

// isFormula reports whether a spreadsheet could run val: it starts with a
// formula character and is not simply a signed number ("-12.50" is data).
func isFormula(val string) bool {
	return val != "" && strings.IndexByte(formulaStart, val[0]) >= 0 && !decimal.Valid(val)
}

// isText reports whether values of the column are free text, where a
// formula could hide; typed values are checked to be what they claim.
func (c column) isText() bool {
	if c.spec == nil {
		return true
	}
	t := c.spec.GetType()
	return t == spoolv1.ColumnType_COLUMN_TYPE_UNSPECIFIED || t == spoolv1.ColumnType_COLUMN_TYPE_STRING
}

// check returns why val does not fit the column, or "".
func (c column) check(val string) string {
	s := c.spec
	if s == nil {
		return ""
	}
	if val == "" {
		if s.GetOptional() {
			return ""
		}
		return "required value is empty"
	}
	if m := s.GetMaxLength(); m > 0 && utf8.RuneCountInString(val) > int(m) {
		return fmt.Sprintf("longer than max_length=%d characters", m)
	}
	switch s.GetType() {
	case spoolv1.ColumnType_COLUMN_TYPE_INTEGER:
		if _, err := strconv.ParseInt(val, 10, 64); err != nil {
			return "not an integer (digits, an optional sign, within 64 bits)"
		}
	case spoolv1.ColumnType_COLUMN_TYPE_DECIMAL:
		if !decimal.Valid(val) {
			return "not a decimal number (digits, an optional sign and point; no exponent or separators)"
		}
		if sc := s.GetScale(); sc > 0 {
			if i := strings.IndexByte(val, '.'); i >= 0 && len(val)-i-1 > int(sc) {
				return fmt.Sprintf("more than scale=%d digits after the point", sc)
			}
		}
	case spoolv1.ColumnType_COLUMN_TYPE_DATE:
		layout := cmp.Or(s.GetLayout(), DefaultDateLayout)
		if _, err := time.Parse(layout, val); err != nil {
			return fmt.Sprintf("not a date in layout %q", layout)
		}
	case spoolv1.ColumnType_COLUMN_TYPE_ENUM:
		if !slices.Contains(s.GetValues(), val) {
			return fmt.Sprintf("not one of %s", strings.Join(s.GetValues(), ", "))
		}
	}
	if c.pattern != nil && !c.pattern.MatchString(val) {
		return fmt.Sprintf("does not match pattern %q", s.GetPattern())
	}
	return ""
}
