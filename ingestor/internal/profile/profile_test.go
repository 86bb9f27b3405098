package profile

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

const payrollYAML = `
profiles:
  - name: payroll
    row_policy: skip-rows
    formula_policy: neutralise
    amount_column: amount
    business_key_columns: [id]
    columns:
      - {name: id, type: string, pattern: "E[0-9]+"}
      - {name: amount, type: decimal, scale: 2}
      - {name: count, type: integer, optional: true}
      - {name: day, type: date}
      - {name: currency, type: enum, values: [EUR, USD]}
      - {name: note, optional: true, max_length: 5}
    body:
      - {name: employee, column: id}
      - {name: amount, column: amount, as_number: true}
      - {name: amountText, column: amount}
      - {name: count, column: count}
      - {name: note, column: note}
      - {name: source, constant: spool}
      - {name: ref, meta: transaction_key}
      - {name: row, meta: row}
`

func payroll(t testing.TB) *spoolv1.Profile {
	t.Helper()
	set, err := Parse([]byte(payrollYAML))
	require.NoError(t, err)
	p, ok := set.Get("payroll")
	require.True(t, ok)
	return p
}

var payrollCols = []string{"id", "amount", "count", "day", "currency", "note", "extra"}

func TestParseShortEnumsAndJSON(t *testing.T) {
	p := payroll(t)
	require.Equal(t, spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS, p.GetRowPolicy())
	require.Equal(t, spoolv1.FormulaPolicy_FORMULA_POLICY_NEUTRALISE, p.GetFormulaPolicy())
	require.Equal(t, spoolv1.ColumnType_COLUMN_TYPE_DECIMAL, p.GetColumns()[1].GetType())
	require.Equal(t, spoolv1.BodyMeta_BODY_META_TRANSACTION_KEY, p.GetBody()[6].GetMeta())

	// The same profile as JSON, with full enum names, reads the same.
	js := `{"profiles":[{"name":"j","rowPolicy":"ROW_POLICY_SKIP_ROWS","columns":[{"name":"a","type":"COLUMN_TYPE_INTEGER"}]}]}`
	set, err := Parse([]byte(js))
	require.NoError(t, err)
	want := &spoolv1.Profile{Name: "j", RowPolicy: spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS,
		Columns: []*spoolv1.ColumnSpec{{Name: "a", Type: spoolv1.ColumnType_COLUMN_TYPE_INTEGER}}}
	require.Empty(t, cmp.Diff([]*spoolv1.Profile{want}, set.List(), protocmp.Transform()))
}

func TestExampleFileLoads(t *testing.T) {
	set, err := Load(filepath.Join("..", "..", "profiles.example.yaml"))
	require.NoError(t, err)
	require.Len(t, set.List(), 2)
}

func TestParseRefusesBadProfiles(t *testing.T) {
	tests := []struct {
		name, yaml, msg string
	}{
		{name: "no name", yaml: `profiles: [{columns: [{name: a}]}]`, msg: "name: is required"},
		{name: "duplicate profile", yaml: `profiles: [{name: a}, {name: a}]`, msg: `name "a" appears twice`},
		{name: "unknown field", yaml: `profiles: [{name: a, colums: []}]`, msg: "colums"},
		{name: "unknown type", yaml: `profiles: [{name: a, columns: [{name: x, type: money}]}]`, msg: "COLUMN_TYPE_MONEY"},
		{name: "bad pattern", yaml: `profiles: [{name: a, columns: [{name: x, pattern: "("}]}]`, msg: "columns[0].pattern"},
		{name: "enum without values", yaml: `profiles: [{name: a, columns: [{name: x, type: enum}]}]`, msg: "needs its values"},
		{name: "amount not decimal", yaml: `profiles: [{name: a, amount_column: x, columns: [{name: x, type: integer}]}]`, msg: "must be declared DECIMAL"},
		{name: "as_number on a string", yaml: `profiles: [{name: a, columns: [{name: x}], body: [{name: x, column: x, as_number: true}]}]`, msg: "not declared DECIMAL"},
		{name: "body without source", yaml: `profiles: [{name: a, body: [{name: x}]}]`, msg: "needs a column, a constant or a meta value"},
		{name: "duplicate column", yaml: `profiles: [{name: a, columns: [{name: x}, {name: x}]}]`, msg: "declared twice"},
		{name: "not YAML", yaml: "profiles: [", msg: "parse"},
		{name: "bad reference spec", yaml: `profiles: [{name: a, reference_from: "id"}]`, msg: "reference_from: reference spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			require.ErrorContains(t, err, tt.msg)
		})
	}
}

func TestCompileChecksHeader(t *testing.T) {
	p := payroll(t)
	_, err := Compile(p, []string{"id", "amount", "day"})
	var perr *Error
	require.ErrorAs(t, err, &perr)
	require.Equal(t, []Violation{
		{Field: "header.columns", Description: `column "count" of profile "payroll" is missing`},
		{Field: "header.columns", Description: `column "currency" of profile "payroll" is missing`},
		{Field: "header.columns", Description: `column "note" of profile "payroll" is missing`},
	}, perr.Violations)

	p.RejectExtraColumns = true
	_, err = Compile(p, payrollCols)
	require.ErrorContains(t, err, `column 7 "extra" is not declared`)
}

func TestRow(t *testing.T) {
	good := []string{"E1", "10.50", "3", "2026-11-30", "EUR", "", "=free"}
	tests := []struct {
		name    string
		profile *spoolv1.Profile
		change  func(f []string)
		column  string
		reason  string
		excerpt string
		after   []string // fields after the check, when it rewrites them
	}{
		{name: "valid; formula in an undeclared column neutralised", after: []string{"E1", "10.50", "3", "2026-11-30", "EUR", "", "'=free"}},
		{name: "pattern", change: func(f []string) { f[0] = "X1" }, column: "id", reason: `does not match pattern "E[0-9]+"`, excerpt: "X1"},
		{name: "pattern is anchored", change: func(f []string) { f[0] = "E1x" }, column: "id", reason: `does not match pattern "E[0-9]+"`},
		{name: "required", change: func(f []string) { f[1] = "" }, column: "amount", reason: "required value is empty"},
		{name: "decimal", change: func(f []string) { f[1] = "1e3" }, column: "amount", reason: "not a decimal number (digits, an optional sign and point; no exponent or separators)"},
		{name: "decimal scale", change: func(f []string) { f[1] = "1.005" }, column: "amount", reason: "more than scale=2 digits after the point"},
		{name: "negative decimal is not a formula", change: func(f []string) { f[1] = "-5.00" }},
		{name: "integer", change: func(f []string) { f[2] = "3.5" }, column: "count", reason: "not an integer (digits, an optional sign, within 64 bits)"},
		{name: "integer overflow", change: func(f []string) { f[2] = "99999999999999999999" }, column: "count", reason: "not an integer (digits, an optional sign, within 64 bits)"},
		{name: "date", change: func(f []string) { f[3] = "30/11/2026" }, column: "day", reason: `not a date in layout "2006-01-02"`},
		{name: "enum", change: func(f []string) { f[4] = "eur" }, column: "currency", reason: "not one of EUR, USD"},
		{name: "max length in characters", change: func(f []string) { f[5] = "ééééé" }},
		{name: "max length", change: func(f []string) { f[5] = "éééééé" }, column: "note", reason: "longer than max_length=5 characters"},
		{
			name: "formula rejected by default", profile: &spoolv1.Profile{Name: "p"},
			change: func(f []string) { f[0] = "@SUM(A1)" }, column: "id", reason: `value starts with "@", which a spreadsheet runs as a formula`, excerpt: "@SUM(A1)",
		},
		{
			name: "formula allowed", profile: &spoolv1.Profile{Name: "p", FormulaPolicy: spoolv1.FormulaPolicy_FORMULA_POLICY_ALLOW},
			change: func(f []string) { f[0] = "+1" }, after: []string{"+1", "10.50", "3", "2026-11-30", "EUR", "", "=free"},
		},
		{
			name: "a signed number in a text column is not a formula", profile: &spoolv1.Profile{Name: "p"},
			change: func(f []string) { f[0] = "-12.50"; f[6] = "+3" },
		},
		{name: "no profile accepts anything", profile: nil, change: func(f []string) { f[1] = "abc"; f[0] = "=1" }},
		{name: "excerpt is cut", change: func(f []string) { f[0] = "X" + string(make([]byte, 40)) }, column: "id", excerpt: `X\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000…`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := payroll(t)
			if tt.profile != nil || tt.name == "no profile accepts anything" {
				p = tt.profile
				if p != nil {
					p.Columns = []*spoolv1.ColumnSpec{{Name: "id"}}
				}
			}
			v, err := Compile(p, payrollCols)
			require.NoError(t, err)
			f := append([]string(nil), good...)
			if tt.change != nil {
				tt.change(f)
			}
			got := v.Row(4, f)
			if tt.column == "" {
				require.Nil(t, got)
				if tt.after != nil {
					require.Equal(t, tt.after, f)
				}
				return
			}
			require.NotNil(t, got)
			require.EqualValues(t, 4, got.GetRow())
			require.Equal(t, tt.column, got.GetColumn())
			if tt.reason != "" {
				require.Equal(t, tt.reason, got.GetReason())
			}
			if tt.excerpt != "" {
				require.Equal(t, tt.excerpt, got.GetExcerpt())
			}
		})
	}
}

func TestBody(t *testing.T) {
	v, err := Compile(payroll(t), payrollCols)
	require.NoError(t, err)
	require.True(t, v.MapsBody())
	f := []string{"E7", "+0012345678901234567.10", "", "2026-11-30", "EUR", "", "x"}
	require.Nil(t, v.Row(9, f))
	got := v.Body(f, Meta{JobID: "j", Row: 9, TransactionKey: "bk:1"})
	require.Equal(t, `{"employee":"E7","amount":12345678901234567.10,"amountText":"+0012345678901234567.10","count":null,"note":null,"source":"spool","ref":"bk:1","row":9}`, got)
	require.True(t, json.Valid([]byte(got)))

	plain, err := Compile(nil, payrollCols)
	require.NoError(t, err)
	require.False(t, plain.MapsBody())
	require.Empty(t, plain.Body(f, Meta{}))
	require.Equal(t, spoolv1.RowPolicy_ROW_POLICY_REJECT_FILE, plain.Policy())
	require.Equal(t, spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS, v.Policy())
}

func TestJSONNumber(t *testing.T) {
	for in, want := range map[string]string{
		"0": "0", "+007.50": "7.50", ".5": "0.5", "5.": "5", "-0.00": "0.00", "-12.3": "-12.3", "000": "0", "-.1": "-0.1",
	} {
		got := JSONNumber(in)
		require.Equal(t, want, got, in)
		require.True(t, json.Valid([]byte(got)), in)
	}
}
