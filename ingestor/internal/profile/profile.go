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
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/platform/decimal"
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

// Set is the profiles configured on an ingestor, by name.
type Set struct {
	list []*spoolv1.Profile
}

// Load reads a profile file: YAML or JSON (JSON is YAML too), a list of
// profiles under "profiles", in the fields of spool.v1.Profile (snake_case
// or lowerCamelCase). Enum values may be written short and in lower case:
// row_policy: skip-rows, type: decimal, meta: transaction_key.
func Load(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	set, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("profiles %s: %w", filepath.Base(path), err)
	}
	return set, nil
}

// Parse reads the contents of a profile file; see Load.
func Parse(data []byte) (*Set, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	js, err := json.Marshal(shortEnums(doc, ""))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var file spoolv1.ListProfilesResponse
	if err := protojson.Unmarshal(js, &file); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	set := &Set{}
	seen := map[string]bool{}
	for i, p := range file.GetProfiles() {
		if err := Check(p); err != nil {
			return nil, fmt.Errorf("profile %d: %w", i+1, err)
		}
		if seen[p.GetName()] {
			return nil, fmt.Errorf("profile %d: name %q appears twice", i+1, p.GetName())
		}
		seen[p.GetName()] = true
		set.list = append(set.list, p)
	}
	return set, nil
}

// enumPrefixes are the fields whose values may be written short, and the
// prefix of their enum's value names.
var enumPrefixes = map[string]string{
	"row_policy": "ROW_POLICY_", "rowPolicy": "ROW_POLICY_",
	"formula_policy": "FORMULA_POLICY_", "formulaPolicy": "FORMULA_POLICY_",
	"type": "COLUMN_TYPE_",
	"meta": "BODY_META_",
}

// shortEnums rewrites short enum values ("skip-rows") to their full names
// ("ROW_POLICY_SKIP_ROWS") and makes YAML's maps JSON-encodable.
func shortEnums(v any, key string) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = shortEnums(e, k)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = shortEnums(e, key)
		}
		return t
	case string:
		if prefix, ok := enumPrefixes[key]; ok && !strings.HasPrefix(t, prefix) {
			return prefix + strings.ToUpper(strings.ReplaceAll(t, "-", "_"))
		}
	}
	return v
}

// Get returns the profile named name.
func (s *Set) Get(name string) (*spoolv1.Profile, bool) {
	if s == nil {
		return nil, false
	}
	for _, p := range s.list {
		if p.GetName() == name {
			return p, true
		}
	}
	return nil, false
}

// List returns every profile, in the file's order.
func (s *Set) List() []*spoolv1.Profile {
	if s == nil {
		return nil
	}
	out := make([]*spoolv1.Profile, len(s.list))
	for i, p := range s.list {
		out[i] = proto.Clone(p).(*spoolv1.Profile)
	}
	return out
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

// Body returns the JSON body of a valid row, or "" when the profile maps
// none. Decimals are copied digit for digit, never through a float.
func (v *Validator) Body(fields []string, m Meta) string {
	if len(v.body) == 0 {
		return ""
	}
	b := &v.buf
	b.Reset()
	b.WriteByte('{')
	for i, f := range v.body {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(f.key)
		switch {
		case f.meta == spoolv1.BodyMeta_BODY_META_JOB_ID:
			writeString(b, m.JobID)
		case f.meta == spoolv1.BodyMeta_BODY_META_ROW:
			b.WriteString(strconv.FormatInt(m.Row, 10))
		case f.meta == spoolv1.BodyMeta_BODY_META_TRANSACTION_KEY:
			writeString(b, m.TransactionKey)
		case f.col < 0:
			writeValue(b, f.constant, f.number)
		default:
			c := v.checks[f.col]
			val := fields[f.col]
			switch {
			case val == "":
				if c.spec != nil && c.spec.GetOptional() {
					b.WriteString("null")
				} else {
					writeString(b, val)
				}
			case c.spec.GetType() == spoolv1.ColumnType_COLUMN_TYPE_INTEGER:
				n, _ := strconv.ParseInt(val, 10, 64)
				b.WriteString(strconv.FormatInt(n, 10))
			case c.spec.GetType() == spoolv1.ColumnType_COLUMN_TYPE_DECIMAL:
				writeValue(b, val, f.number)
			default:
				writeString(b, val)
			}
		}
	}
	b.WriteByte('}')
	return b.String()
}

// writeValue writes a decimal as a JSON number, in the form JSON allows
// (no plus sign, no leading zeros, digits around the point), or any value
// as a string.
func writeValue(b *bytes.Buffer, val string, number bool) {
	if !number {
		writeString(b, val)
		return
	}
	b.WriteString(JSONNumber(val))
}

// JSONNumber rewrites a valid decimal as a JSON number with the same
// value and the same digits after the point: "+007.50" is "7.50", ".5" is
// "0.5", "5." is "5".
func JSONNumber(d string) string {
	neg := strings.HasPrefix(d, "-")
	d = strings.TrimLeft(d, "+-")
	intPart, frac, _ := strings.Cut(d, ".")
	intPart = strings.TrimLeft(intPart, "0")
	if intPart == "" {
		intPart = "0"
	}
	out := intPart
	if frac != "" {
		out += "." + frac
	}
	if neg && strings.Trim(out, "0.") != "" {
		out = "-" + out
	}
	return out
}

func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}
