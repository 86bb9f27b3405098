package validate

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestFile(t *testing.T) {
	profiles, err := LoadProfiles(filepath.Join("..", "profiles.example.yaml"))
	require.NoError(t, err)
	payroll := profiles[0]
	const header = "employee_id,name,iban,amount,currency,period,note\n"
	good := "E1,Ada,DE89370400440532013000,10.50,EUR,2026-11,\n"
	tests := []struct {
		name     string
		data     string
		profile  *spoolv1.Profile
		rows     int64
		rejected []string // "row column" of each error
		accepted bool
		err      string
	}{
		{name: "valid", data: header + good + good, profile: payroll, rows: 2, accepted: true},
		{
			name: "invalid rows", profile: payroll, rows: 4,
			data:     header + good + "E2,=cmd(),DE89370400440532013000,1,EUR,2026-11,\n" + "E3,Bo,DE89370400440532013000,1.005,EUR,2026-11,\n" + "E4,\"x\n",
			rejected: []string{"2 name", "3 amount", "4 name"},
		},
		{name: "no profile checks the CSV only", data: header + "E2,=cmd(),x,1.005,EUR,2026-11,\n", rows: 1, accepted: true},
		{name: "missing column", data: "employee_id,amount\nE1,1\n", profile: payroll, err: `column "name" of profile "payroll-v1" is missing`},
		{name: "limit", data: header + strings.Repeat("x", 70000) + "\n", err: "max-field-bytes=65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := File(strings.NewReader(tt.data), Options{Profile: tt.profile, MaxErrors: 10})
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.rows, rep.Rows)
			var got []string
			for _, e := range rep.Errors {
				got = append(got, itoa(e.GetRow())+" "+e.GetColumn())
			}
			require.Equal(t, tt.rejected, got)
			require.EqualValues(t, len(tt.rejected), rep.Rejected)
			require.Equal(t, tt.accepted, rep.Accepted())
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestLoadProfilesMissingFile(t *testing.T) {
	_, err := LoadProfiles(filepath.Join(t.TempDir(), "none.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
