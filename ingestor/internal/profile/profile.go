// Package profile checks a file's rows against its profile (spool.v1.Profile:
// the file's schema, row policy and body mapping) and builds the JSON body
// each row is delivered as. The ingestor and `spool validate` run the same
// code, so a file that validates locally is accepted by the ingestor.
//
// A profile is checked twice: on its own when it is loaded (Check), and
// against a file's columns when a stream names it (Compile). Rows are then
// checked one by one (Validator.Row); no row is held.
package profile

import (
	"cmp"
	"fmt"
	"regexp"
	"strings"
	"time"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/decimal"
	"github.com/spoolhq/spool/platform/reference"
	"github.com/spoolhq/spool/platform/threshold"
)

// DefaultDateLayout is the layout of a DATE column that names none.
const DefaultDateLayout = "2006-01-02"

// Violation is one thing wrong with a profile or a file's header: Field
// names where (a path in the profile, or header.columns), Description why.
type Violation struct {
	Field       string
	Description string
}

// Error lists everything wrong with a profile or a header at once, so that
// one round trip is enough to fix them.
type Error struct {
	// Subject says what was checked: "profile payroll" or "header".
	Subject    string
	Violations []Violation
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is invalid:", e.Subject)
	for i, v := range e.Violations {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s: %s", v.Field, v.Description)
	}
	return b.String()
}

// Check reports what is wrong with a profile on its own, whatever file it
// is used for.
func Check(p *spoolv1.Profile) error {
	var vs []Violation
	add := func(field, format string, args ...any) {
		vs = append(vs, Violation{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	if p.GetName() == "" {
		add("name", "is required")
	}
	if err := threshold.Validate(p.GetFailureThreshold()); err != nil {
		add("failure_threshold", "%v", err)
	}
	declared := map[string]*spoolv1.ColumnSpec{}
	for i, c := range p.GetColumns() {
		f := fmt.Sprintf("columns[%d]", i)
		switch {
		case c.GetName() == "":
			add(f+".name", "is required")
		case declared[c.GetName()] != nil:
			add(f+".name", "column %q is declared twice", c.GetName())
		}
		declared[c.GetName()] = c
		if c.GetMaxLength() < 0 || c.GetScale() < 0 {
			add(f, "max_length and scale must not be negative")
		}
		if c.GetPattern() != "" {
			if _, err := regexp.Compile(c.GetPattern()); err != nil {
				add(f+".pattern", "%v", err)
			}
		}
		switch c.GetType() {
		case spoolv1.ColumnType_COLUMN_TYPE_ENUM:
			if len(c.GetValues()) == 0 {
				add(f+".values", "an enum column needs its values")
			}
		case spoolv1.ColumnType_COLUMN_TYPE_DATE:
			layout := cmp.Or(c.GetLayout(), DefaultDateLayout)
			if _, err := time.Parse(layout, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC).Format(layout)); err != nil {
				add(f+".layout", "%q is not a Go time layout: %v", layout, err)
			}
		}
	}
	if a := p.GetAmountColumn(); a != "" {
		if c := declared[a]; c != nil && c.GetType() != spoolv1.ColumnType_COLUMN_TYPE_DECIMAL {
			add("amount_column", "column %q must be declared DECIMAL", a)
		}
	}
	if _, err := reference.Parse(p.GetReferenceFrom()); err != nil {
		add("reference_from", "%v", err)
	}
	names := map[string]bool{}
	for i, b := range p.GetBody() {
		f := fmt.Sprintf("body[%d]", i)
		if b.GetName() == "" {
			add(f+".name", "is required")
		} else if names[b.GetName()] {
			add(f+".name", "member %q appears twice", b.GetName())
		}
		names[b.GetName()] = true
		switch src := b.GetSource().(type) {
		case *spoolv1.BodyField_Column:
			c := declared[src.Column]
			if b.GetAsNumber() && (c == nil || c.GetType() != spoolv1.ColumnType_COLUMN_TYPE_DECIMAL) {
				add(f+".as_number", "column %q is not declared DECIMAL", src.Column)
			}
		case *spoolv1.BodyField_Constant:
			if b.GetAsNumber() && !decimal.Valid(src.Constant) {
				add(f+".constant", "%q is not a decimal number", src.Constant)
			}
		case *spoolv1.BodyField_Meta:
			if src.Meta == spoolv1.BodyMeta_BODY_META_UNSPECIFIED {
				add(f+".meta", "names no value")
			}
		default:
			add(f, "needs a column, a constant or a meta value")
		}
	}
	if len(vs) > 0 {
		return &Error{Subject: fmt.Sprintf("profile %q", p.GetName()), Violations: vs}
	}
	return nil
}
