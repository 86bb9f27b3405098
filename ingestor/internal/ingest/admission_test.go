package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/validate"
)

// admissionCase is one file as `spool validate` and StreamFile both see
// it: the same header, profile and limits.
type admissionCase struct {
	name    string
	header  *spoolv1.FileHeader
	profile *spoolv1.Profile
	limits  csvread.Limits
	data    []byte
}

// TestOneAdmissionForValidateAndStreamFile feeds the hostile corpus and
// the profile cases through `spool validate`'s package and through
// StreamFile, and requires the same answer: the same status (code,
// message, details) for a refused file, the same row errors, counts and
// verdict for the rest.
func TestOneAdmissionForValidateAndStreamFile(t *testing.T) {
	cases := append(corpusCases(t), profileCases()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, verr := validate.File(bytes.NewReader(tc.data), validate.Options{
				Header: tc.header, Profile: tc.profile, Limits: tc.limits, MaxErrors: 1000,
			})

			jobs := newFakeJobs()
			c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(&fakePub{}), MaxErrors: 1000, CSV: csvread.Options{Limits: tc.limits}})
			h := proto.Clone(tc.header).(*spoolv1.FileHeader)
			h.InlineProfile = tc.profile
			msgs := []*spoolv1.StreamFileRequest{hdr(h)}
			if len(tc.data) > 0 {
				msgs = append(msgs, chunkMsg(string(tc.data)))
			}
			resp, serr := send(context.Background(), c, msgs...)

			if verr != nil {
				want := admissionStatus(verr)
				require.NotNil(t, want, "validate's error %v is not an admission error", verr)
				require.Empty(t, cmp.Diff(want.Proto(), status.Convert(serr).Proto(), protocmp.Transform()),
					"validate: %v\nStreamFile: %v", verr, serr)
				return
			}
			if rep.Accepted() {
				require.NoError(t, serr, "validate accepted the file")
				requireSameRows(t, rep, resp)
				return
			}
			require.Equal(t, codes.InvalidArgument, status.Code(serr), "validate rejected the file for its rows: %v", serr)
			_, rejected := details(t, serr)
			require.NotNil(t, rejected)
			requireSameRows(t, rep, rejected)
		})
	}
}

func requireSameRows(tb testing.TB, rep *validate.Report, resp *spoolv1.StreamFileResponse) {
	tb.Helper()
	require.Equal(tb, rep.Rows, resp.GetRowsReceived())
	require.Equal(tb, rep.Rejected, resp.GetRowsRejected())
	require.Empty(tb, cmp.Diff(rep.Errors, resp.GetErrors(), protocmp.Transform(), cmpopts.EquateEmpty()))
}

// corpusCases are the files of the CSV reader's hostile corpus, each with
// its limits, sent without a profile.
func corpusCases(tb testing.TB) []admissionCase {
	tb.Helper()
	dir := filepath.Join("..", "csvread", "testdata", "hostile")
	limits := map[string]csvread.Limits{}
	raw, err := os.ReadFile(filepath.Join(dir, "limits.json"))
	require.NoError(tb, err)
	require.NoError(tb, json.Unmarshal(raw, &limits))
	files, err := filepath.Glob(filepath.Join(dir, "*.csv"))
	require.NoError(tb, err)
	require.NotEmpty(tb, files)
	var cases []admissionCase
	for _, path := range files {
		data, err := os.ReadFile(path)
		require.NoError(tb, err)
		name := filepath.Base(path)
		cases = append(cases, admissionCase{name: "corpus/" + strings.TrimSuffix(name, ".csv"), header: &spoolv1.FileHeader{}, limits: limits[name], data: data})
	}
	return cases
}

// profileCases are files under profiles and header settings, each a rule
// of admission.
func profileCases() []admissionCase {
	payroll := &spoolv1.Profile{
		Name: "payroll", AmountColumn: "amount", BusinessKeyColumns: []string{"id"},
		Columns: []*spoolv1.ColumnSpec{
			{Name: "id", Pattern: "E[0-9]+"},
			{Name: "amount", Type: spoolv1.ColumnType_COLUMN_TYPE_DECIMAL, Scale: 2},
			{Name: "currency", Type: spoolv1.ColumnType_COLUMN_TYPE_ENUM, Values: []string{"EUR", "GBP"}},
			{Name: "note", Optional: true, MaxLength: 5},
		},
	}
	lenient := proto.Clone(payroll).(*spoolv1.Profile)
	lenient.Name, lenient.RowPolicy = "lenient", spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS
	strict := proto.Clone(payroll).(*spoolv1.Profile)
	strict.Name, strict.RejectExtraColumns = "strict", true
	const good = "id,amount,currency,note\nE1,1.00,EUR,\nE2,-2.50,GBP,ok\n"
	bad := "id,amount,currency,note\nE1,1.00,EUR,\nX2,1,EUR,\nE3,1.005,EUR,\nE4,1,USD,\nE5,1,EUR,toolong\nE6,,EUR,\nE7,1,EUR,=cmd()\nE8,1,EUR\n"
	none := &spoolv1.FileHeader{}
	return []admissionCase{
		{name: "profile/valid", header: none, profile: payroll, data: []byte(good)},
		{name: "profile/invalid rows reject the file", header: none, profile: payroll, data: []byte(bad)},
		{name: "profile/invalid rows skipped", header: none, profile: lenient, data: []byte(bad)},
		{name: "profile/missing columns", header: none, profile: payroll, data: []byte("id,other\nE1,2\n")},
		{name: "profile/extra column refused", header: none, profile: strict, data: []byte("id,amount,currency,note,x\nE1,1,EUR,,y\n")},
		{name: "profile/header contradicts it", header: &spoolv1.FileHeader{AmountColumn: "note"}, profile: payroll, data: []byte(good)},
		{name: "profile/header business key contradicts it", header: &spoolv1.FileHeader{BusinessKeyColumns: []string{"note"}}, profile: payroll, data: []byte(good)},
		{name: "profile/invalid", header: none, profile: &spoolv1.Profile{Name: "x", Columns: []*spoolv1.ColumnSpec{{Name: "a", Pattern: "("}}}, data: []byte("a\n1\n")},
		{name: "header/amount not a decimal", header: &spoolv1.FileHeader{AmountColumn: "amount"}, data: []byte("id,amount\n1,1.5\n2,abc\n3,1e3\n")},
		{name: "header/named columns missing", header: &spoolv1.FileHeader{AmountColumn: "amt", BusinessKeyColumns: []string{"id", "ref"}}, data: []byte("id,amount\n1,1\n")},
		{name: "header/profile and header both miss a column", header: &spoolv1.FileHeader{BusinessKeyColumns: []string{"id"}, AmountColumn: "total"},
			profile: &spoolv1.Profile{Name: "p", Columns: []*spoolv1.ColumnSpec{{Name: "iban"}}}, data: []byte("id,amount\n1,1\n")},
		{name: "header/control totals", header: &spoolv1.FileHeader{Control: &spoolv1.ControlTotals{RowCount: proto.Int64(-1), AmountSum: "1e3", Sha256: "xyz"}}, data: []byte("a\n1\n")},
		{name: "header/delimiter", header: &spoolv1.FileHeader{Csv: &spoolv1.CsvOptions{Delimiter: ";"}}, profile: payroll, data: []byte("id;amount;currency;note\nE1;1,00;EUR;\n")},
		{name: "header/bad delimiter", header: &spoolv1.FileHeader{Csv: &spoolv1.CsvOptions{Delimiter: "::"}}, data: []byte("a\n1\n")},
		{name: "header/columns without a header row", header: &spoolv1.FileHeader{Columns: []string{"id", "amount", "currency", "note"}}, profile: payroll, data: []byte("E1,1,EUR,\nE2,x,EUR,\n")},
		{name: "header/duplicate columns", header: &spoolv1.FileHeader{Columns: []string{"id", "id"}}, data: []byte("1,2\n")},
	}
}
