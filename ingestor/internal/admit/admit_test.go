package admit

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
)

var payroll = &spoolv1.Profile{
	Name: "payroll", AmountColumn: "amount", BusinessKeyColumns: []string{"id"},
	Columns: []*spoolv1.ColumnSpec{
		{Name: "id", Pattern: "E[0-9]+"},
		{Name: "amount", Type: spoolv1.ColumnType_COLUMN_TYPE_DECIMAL, Scale: 2},
	},
}

type set map[string]*spoolv1.Profile

func (s set) Get(name string) (*spoolv1.Profile, bool) { p, ok := s[name]; return p, ok }

// violations returns "field: description" of each violation of a
// *profile.Error, or err's text.
func violations(tb testing.TB, err error) []string {
	tb.Helper()
	perr, ok := err.(*profile.Error)
	if !ok {
		return []string{err.Error()}
	}
	var out []string
	for _, v := range perr.Violations {
		out = append(out, v.Field+": "+v.Description)
	}
	return out
}

func TestProfileAndHeader(t *testing.T) {
	tests := []struct {
		name   string
		h      *spoolv1.FileHeader
		want   []string // violations; none when admitted
		bk     []string
		amount string
	}{
		{name: "no profile", h: &spoolv1.FileHeader{AmountColumn: "a"}, amount: "a"},
		{name: "the profile supplies its columns", h: &spoolv1.FileHeader{Profile: "payroll"}, bk: []string{"id"}, amount: "amount"},
		{name: "the header may repeat them", h: &spoolv1.FileHeader{Profile: "payroll", AmountColumn: "amount", BusinessKeyColumns: []string{"id"}}, bk: []string{"id"}, amount: "amount"},
		{
			name: "the header contradicts the profile", h: &spoolv1.FileHeader{Profile: "payroll", AmountColumn: "x", BusinessKeyColumns: []string{"id", "x"}},
			want: []string{`header.business_key_columns: differ from profile "payroll"'s`, `header.amount_column: differs from profile "payroll"'s`},
		},
		{name: "unknown profile", h: &spoolv1.FileHeader{Profile: "nope"}, want: []string{`header.profile: unknown profile "nope"`}},
		{name: "both profiles", h: &spoolv1.FileHeader{Profile: "payroll", InlineProfile: payroll}, want: []string{"header.profile: give profile or inline_profile, not both"}},
		{name: "invalid inline profile", h: &spoolv1.FileHeader{InlineProfile: &spoolv1.Profile{Name: "x", AmountColumn: "a", Columns: []*spoolv1.ColumnSpec{{Name: "a"}}}},
			want: []string{`amount_column: column "a" must be declared DECIMAL`}},
		{
			name: "control totals", h: &spoolv1.FileHeader{Control: &spoolv1.ControlTotals{RowCount: proto.Int64(-2), AmountSum: "1,5", Sha256: "ab"}},
			want: []string{
				"header.control.row_count: -2 is negative", `header.control.amount_sum: "1,5" is not a decimal number`,
				"header.control.amount_sum: needs amount_column", `header.control.sha256: "ab" is not 64 hex digits`,
			},
		},
		{name: "a control sum with the profile's amount column", h: &spoolv1.FileHeader{Profile: "payroll", Control: &spoolv1.ControlTotals{AmountSum: "1.50"}}, bk: []string{"id"}, amount: "amount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := proto.Clone(tt.h)
			p, err := Profile(tt.h, set{"payroll": payroll})
			var f *File
			if err == nil {
				f, err = Header(tt.h, p)
			}
			if tt.want != nil {
				require.Error(t, err)
				require.Equal(t, tt.want, violations(t, err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.bk, f.Header().GetBusinessKeyColumns())
			require.Equal(t, tt.amount, f.Header().GetAmountColumn())
			require.True(t, proto.Equal(before, tt.h), "the caller's header is not changed")
		})
	}
}

func TestColumns(t *testing.T) {
	tests := []struct {
		name string
		h    *spoolv1.FileHeader
		p    *spoolv1.Profile
		cols []string
		want []string
	}{
		{name: "all there", h: &spoolv1.FileHeader{}, p: payroll, cols: []string{"id", "amount", "other"}},
		{
			name: "the profile's columns are the profile's to report, once", h: &spoolv1.FileHeader{}, p: payroll, cols: []string{"other"},
			want: []string{`header.columns: column "id" of profile "payroll" is missing`, `header.columns: column "amount" of profile "payroll" is missing`},
		},
		{
			name: "columns only the header names", h: &spoolv1.FileHeader{BusinessKeyColumns: []string{"id", "ref"}, AmountColumn: "total"}, cols: []string{"id", "amount"},
			want: []string{`header.business_key_columns: column "ref" is not a column of the file`, `header.amount_column: column "total" is not a column of the file`},
		},
		{
			name: "both at once", h: &spoolv1.FileHeader{}, p: &spoolv1.Profile{Name: "p", AmountColumn: "amount", Columns: []*spoolv1.ColumnSpec{{Name: "iban"}}},
			cols: []string{"id"},
			want: []string{`header.columns: column "iban" of profile "p" is missing`, `header.columns: column "amount" named by profile "p" is missing`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Header(tt.h, tt.p)
			require.NoError(t, err)
			_, err = f.Columns(tt.cols)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.Equal(t, tt.want, violations(t, err))
		})
	}
}

func TestRowCheck(t *testing.T) {
	f, err := Header(&spoolv1.FileHeader{}, payroll)
	require.NoError(t, err)
	rows, err := f.Columns([]string{"id", "amount"})
	require.NoError(t, err)
	readerReject := &spoolv1.RowError{Row: 1, Reason: "expected 2 fields, got 3"}
	tests := []struct {
		name string
		row  csvread.Row
		want *spoolv1.RowError
	}{
		{name: "valid", row: csvread.Row{Num: 1, Fields: []string{"E1", "1.50"}}},
		{name: "the reader's reason first", row: csvread.Row{Num: 1, Reject: readerReject}, want: readerReject},
		{name: "then the profile's", row: csvread.Row{Num: 2, Fields: []string{"X1", "x"}},
			want: &spoolv1.RowError{Row: 2, Column: "id", Reason: `does not match pattern "E[0-9]+"`, Excerpt: "X1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.True(t, proto.Equal(tt.want, rows.Check(tt.row)), "got %v", rows.Check(tt.row))
		})
	}
	require.Equal(t, "1.50", rows.Amount([]string{"E1", "1.50"}))
	require.Equal(t, []int{0}, rows.BusinessKey())
	require.True(t, rows.Refuses(1), "reject-file is the default")

	// Without a profile, the amount column is still an exact decimal.
	f, err = Header(&spoolv1.FileHeader{AmountColumn: "amount"}, nil)
	require.NoError(t, err)
	rows, err = f.Columns([]string{"id", "amount"})
	require.NoError(t, err)
	require.True(t, proto.Equal(&spoolv1.RowError{Row: 3, Column: "amount", Reason: "amount is not a decimal number", Excerpt: "1e3"},
		rows.Check(csvread.Row{Num: 3, Fields: []string{"a", "1e3"}})))
}

func TestHeaderGuards(t *testing.T) {
	withThreshold := proto.Clone(payroll).(*spoolv1.Profile)
	withThreshold.Name = "guarded"
	withThreshold.FailureThreshold = &spoolv1.FailureThreshold{MaxFailures: proto.Int64(10), MaxFailureRate: 0.05}
	tests := []struct {
		name string
		h    *spoolv1.FileHeader
		want []string
		eff  *spoolv1.FailureThreshold
	}{
		{name: "none", h: &spoolv1.FileHeader{}},
		{name: "the profile's default", h: &spoolv1.FileHeader{Profile: "guarded"}, eff: withThreshold.GetFailureThreshold()},
		{name: "the header's rate over the profile's", h: &spoolv1.FileHeader{Profile: "guarded", FailureThreshold: &spoolv1.FailureThreshold{MaxFailureRate: 0.02}},
			eff: &spoolv1.FailureThreshold{MaxFailures: proto.Int64(10), MaxFailureRate: 0.02}},
		{name: "bad threshold, canary and date", h: &spoolv1.FileHeader{
			FailureThreshold: &spoolv1.FailureThreshold{MaxFailureRate: 2},
			Canary:           &spoolv1.Canary{Rows: -1},
			DeliverAfter:     &timestamppb.Timestamp{Nanos: -1},
		}, want: []string{
			"header.failure_threshold: max_failure_rate 2 is not a fraction from 0 up to 1 (0.02 is 2%)",
			"header.canary.rows: -1 is negative",
			"header.deliver_after: is not a valid time",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Profile(tt.h, set{"guarded": withThreshold})
			require.NoError(t, err)
			f, err := Header(tt.h, p)
			if tt.want != nil {
				require.Error(t, err)
				require.Equal(t, tt.want, violations(t, err))
				return
			}
			require.NoError(t, err)
			if diff := cmp.Diff(tt.eff, f.Header().GetFailureThreshold(), protocmp.Transform()); diff != "" {
				t.Errorf("threshold (-want +got):\n%s", diff)
			}
		})
	}
}
