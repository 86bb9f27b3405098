package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// profileIngest is an IngestService that only lists profiles.
type profileIngest struct {
	spoolv1.UnimplementedIngestServiceServer
	profiles []*spoolv1.Profile
}

func (p *profileIngest) ListProfiles(context.Context, *spoolv1.ListProfilesRequest) (*spoolv1.ListProfilesResponse, error) {
	return &spoolv1.ListProfilesResponse{Profiles: p.profiles}, nil
}

var remoteProfile = &spoolv1.Profile{
	Name: "payroll", Description: "monthly", AmountColumn: "amount", BusinessKeyColumns: []string{"id"},
	Columns: []*spoolv1.ColumnSpec{
		{Name: "id", Pattern: "E[0-9]+"},
		{Name: "amount", Type: spoolv1.ColumnType_COLUMN_TYPE_DECIMAL, Scale: 2},
		{Name: "note", Optional: true},
	},
	Body: []*spoolv1.BodyField{{Name: "employee", Source: &spoolv1.BodyField_Column{Column: "id"}}},
}

func serveProfiles(tb testing.TB, h *harness, list ...*spoolv1.Profile) {
	tb.Helper()
	h.net.Serve(tb, ingestorAddr, func(s grpc.ServiceRegistrar) {
		spoolv1.RegisterIngestServiceServer(s, &profileIngest{profiles: list})
	})
}

func TestProfiles(t *testing.T) {
	h := newHarness(t)
	serveProfiles(t, h, remoteProfile)
	require.NoError(t, h.run("profiles", "-ingestor-addr", ingestorAddr))
	require.Equal(t, `payroll: monthly
  rows: reject-file, formulas: reject, business key: id, amount: amount
  - id (string)
  - amount (decimal)
  - note (string, optional)
  body: 1 members
`, h.stdout.String())

	h = newHarness(t)
	serveProfiles(t, h)
	require.NoError(t, h.run("profiles", "-ingestor-addr", ingestorAddr))
	require.Contains(t, h.stdout.String(), "no profiles")
}

func TestValidate(t *testing.T) {
	example := filepath.Join("..", "..", "..", "ingestor", "profiles.example.yaml")
	tests := []struct {
		name     string
		args     []string
		file     string
		remote   bool
		wantCode int
		stdout   []string
		errMsg   string
	}{
		{
			name: "valid file, profile from the ingestor", remote: true,
			args: []string{"-profile", "payroll"}, file: "id,amount,note\nE1,10.50,\nE2,-3,x\n",
			stdout: []string{"profile payroll, row policy reject-file", "rows: 2 read, 0 invalid", "valid: the ingestor would accept every row"},
		},
		{
			name: "invalid rows, profile from a file",
			args: []string{"-profile", "payouts-lenient", "-profiles", example}, file: "payee,amount\nAda,1.005\n=cmd,2\nBo,3\n",
			wantCode: 1,
			stdout:   []string{"row policy skip-rows", "rows: 3 read, 1 invalid", `row 1, column amount: more than scale=2 digits after the point (value "1.005")`},
			errMsg:   "1 invalid rows: under skip-rows the ingestor would leave them out and deliver the other 2",
		},
		{
			name: "reject-file", remote: true, args: []string{"-profile", "payroll", "-max-errors", "1"}, file: "id,amount,note\nX1,1,\nE2,1,2,3\nE3,1,\n",
			wantCode: 1,
			stdout:   []string{"rows: 3 read, 2 invalid", `row 1, column id: does not match pattern "E[0-9]+" (value "X1")`, "... and 1 more invalid rows"},
			errMsg:   "2 invalid rows: under reject-file the ingestor would reject the whole file",
		},
		{
			name: "header does not fit", remote: true, args: []string{"-profile", "payroll"}, file: "id,amt\nE1,1\n",
			wantCode: 1, errMsg: "the ingestor would refuse the file: header is invalid\n  header.columns: column \"amount\" of profile \"payroll\" is missing",
		},
		{
			name: "header contradicts the profile", remote: true, args: []string{"-profile", "payroll", "-amount-column", "note"}, file: "id,amount,note\nE1,1,\n",
			wantCode: 1, errMsg: "the ingestor would refuse the file: header is invalid\n  header.amount_column: differs from profile \"payroll\"'s",
		},
		{
			name: "header names a column the file lacks", args: []string{"-business-key", "id,ref"}, file: "id,amount\nE1,1\n",
			wantCode: 1, errMsg: "the ingestor would refuse the file: header is invalid\n  header.business_key_columns: column \"ref\" is not a column of the file",
		},
		{
			name: "amount not a decimal, with its value", args: []string{"-amount-column", "amount"}, file: "id,amount\nE1,abc\n",
			wantCode: 1, stdout: []string{`row 1, column amount: amount is not a decimal number (value "abc")`},
		},
		{
			name: "unknown profile", remote: true, args: []string{"-profile", "nope"}, file: "id\n",
			wantCode: 1, errMsg: `no profile "nope" in the ingestor at 127.0.0.1:1 (profiles: payroll)`,
		},
		{
			name: "no profile checks the CSV", args: nil, file: "a,b\n1,\"x\n",
			wantCode: 1, stdout: []string{"profile (none: the CSV alone)", "row 1, column b: quoted field not closed before the end of the file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.remote {
				serveProfiles(t, h, remoteProfile)
			}
			path := writeFile(t, "pay.csv", tt.file)
			args := append([]string{"validate", "-ingestor-addr", ingestorAddr}, tt.args...)
			err := h.run(append(args, path)...)
			require.Equal(t, tt.wantCode, exitCode(err, &bytes.Buffer{}), "err: %v", err)
			for _, s := range tt.stdout {
				require.Contains(t, h.stdout.String(), s)
			}
			if tt.errMsg != "" {
				require.ErrorContains(t, err, tt.errMsg)
			}
		})
	}
}
