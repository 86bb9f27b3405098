package ingest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
)

const profilesYAML = `
profiles:
  - name: payroll
    business_key_columns: [id]
    amount_column: amount
    columns:
      - {name: id, pattern: "E[0-9]+"}
      - {name: amount, type: decimal, scale: 2}
    body:
      - {name: employee, column: id}
      - {name: amount, column: amount, as_number: true}
      - {name: source, constant: spool}
  - name: lenient
    row_policy: skip-rows
    columns:
      - {name: id, pattern: "E[0-9]+"}
`

func profiles(tb testing.TB) *profile.Set {
	tb.Helper()
	set, err := profile.Parse([]byte(profilesYAML))
	require.NoError(tb, err)
	return set
}

// details returns the BadRequest violations and the StreamFileResponse an
// error carries.
func details(tb testing.TB, err error) ([]string, *spoolv1.StreamFileResponse) {
	tb.Helper()
	var fields []string
	var resp *spoolv1.StreamFileResponse
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fields = append(fields, v.GetField()+": "+v.GetDescription())
			}
		case *spoolv1.StreamFileResponse:
			resp = d
		}
	}
	return fields, resp
}

func TestRejectFileIsTheDefault(t *testing.T) {
	for _, name := range []string{"no profile", "payroll"} {
		t.Run(name, func(t *testing.T) {
			jobs, pub := newFakeJobs(), &fakePub{}
			c, logs := startServer(t, jobs, Config{NewPublisher: pubFactory(pub), MaxErrors: 2, Profiles: profiles(t)})
			h := &spoolv1.FileHeader{}
			if name != "no profile" {
				h.Profile = name
			}
			_, err := send(context.Background(), c, hdr(h),
				chunkMsg("id,amount\nE1,1.00\nE2,"+secret+"\nE3,1,2\nE4,4.00\nE5,x\n"))
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			fields, resp := details(t, err)
			require.NotNil(t, resp)
			require.EqualValues(t, 5, resp.GetRowsReceived())
			j := jobs.only(t)
			require.Equal(t, spoolv1.JobState_JOB_STATE_REJECTED, j.GetState())
			require.Contains(t, j.GetStateReason(), "row policy reject-file")
			require.NotContains(t, err.Error(), secret, "the status message is logged: no values")
			require.NotContains(t, logs.String(), secret)
			// Nothing is published after the first invalid row.
			for _, e := range pub.envelopes() {
				require.Less(t, e.GetRow(), resp.GetErrors()[0].GetRow())
			}
			if name == "payroll" {
				require.EqualValues(t, 3, resp.GetRowsRejected(), "the count is not capped")
				require.Len(t, resp.GetErrors(), 2, "the errors returned are capped")
				require.Equal(t, []string{
					"row 2, column amount: not a decimal number (digits, an optional sign and point; no exponent or separators)",
					"row 3: expected 2 fields, got 3",
				}, fields)
				require.Equal(t, secret, resp.GetErrors()[0].GetExcerpt(), "the caller gets an excerpt")
			} else {
				require.EqualValues(t, 1, resp.GetRowsRejected(), "without a profile only the CSV is checked")
			}
		})
	}
}

func TestProfileMapsBodyAndSkipsRows(t *testing.T) {
	jobs, pub := newFakeJobs(), &fakePub{}
	c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(pub), MaxErrors: 10, Profiles: profiles(t)})
	resp, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{Profile: "payroll"}),
		chunkMsg("id,amount\nE1,+0012345678901234567.10\nE2,-0.50\n"))
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.GetRowsPublished())
	j := jobs.only(t)
	require.Equal(t, []string{"id"}, j.GetBusinessKeyColumns(), "the profile's business key")
	require.Equal(t, "amount", j.GetAmountColumn())
	require.Equal(t, "12345678901234566.60", j.GetActual().GetAmountSum())
	envs := pub.envelopes()
	require.Len(t, envs, 2)
	require.Equal(t, `{"employee":"E1","amount":12345678901234567.10,"source":"spool"}`, envs[0].GetBody())
	require.True(t, json.Valid([]byte(envs[1].GetBody())))

	jobs, pub = newFakeJobs(), &fakePub{}
	c, _ = startServer(t, jobs, Config{NewPublisher: pubFactory(pub), MaxErrors: 10, Profiles: profiles(t)})
	resp, err = send(context.Background(), c, hdr(&spoolv1.FileHeader{Profile: "lenient"}),
		chunkMsg("id,amount\nE1,1\nX2,2\nE3,3\n"))
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.GetRowsPublished())
	require.EqualValues(t, 1, resp.GetRowsRejected())
	require.Equal(t, "id", resp.GetErrors()[0].GetColumn())
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, jobs.only(t).GetState())
	require.Empty(t, pub.envelopes()[0].GetBody(), "a profile without a body sends the columns by name")
}

func TestRefusedHeadersSpeakGRPC(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		h      *spoolv1.FileHeader
		data   string
		code   codes.Code
		fields []string
		quota  string
	}{
		{
			name: "unknown profile", h: &spoolv1.FileHeader{Profile: "nope"}, data: "id\nE1\n",
			code: codes.InvalidArgument, fields: []string{`header.profile: unknown profile "nope"`},
		},
		{
			name: "both profiles", h: &spoolv1.FileHeader{Profile: "payroll", InlineProfile: lenient}, data: "id\nE1\n",
			code: codes.InvalidArgument, fields: []string{"header.profile: give profile or inline_profile, not both"},
		},
		{
			name: "invalid inline profile", h: &spoolv1.FileHeader{InlineProfile: &spoolv1.Profile{Name: "x", Columns: []*spoolv1.ColumnSpec{{Name: "a", Pattern: "("}}}}, data: "a\n1\n",
			code: codes.InvalidArgument, fields: []string{"columns[0].pattern: error parsing regexp: missing closing ): `(`"},
		},
		{
			name: "missing columns", h: &spoolv1.FileHeader{Profile: "payroll"}, data: "id,other\nE1,2\n",
			code: codes.InvalidArgument, fields: []string{`header.columns: column "amount" of profile "payroll" is missing`},
		},
		{
			name: "header contradicts profile", h: &spoolv1.FileHeader{Profile: "payroll", AmountColumn: "other"}, data: "id,amount,other\n",
			code: codes.InvalidArgument, fields: []string{`header.amount_column: differs from profile "payroll"'s`},
		},
		{
			name: "duplicate header", h: &spoolv1.FileHeader{}, data: "id,id\n",
			code: codes.InvalidArgument, fields: []string{`header.columns[2]: "id" appears twice (columns 1 and 2)`},
		},
		{
			name: "header limit", cfg: Config{CSV: csvread.Options{Limits: csvread.Limits{MaxHeaderBytes: 8}}}, h: &spoolv1.FileHeader{}, data: "id,amount\n",
			code: codes.ResourceExhausted, quota: "max-header-bytes",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newFakeJobs()
			tt.cfg.NewPublisher = pubFactory(&fakePub{})
			tt.cfg.Profiles = profiles(t)
			c, _ := startServer(t, jobs, tt.cfg)
			_, err := send(context.Background(), c, hdr(tt.h), chunkMsg(tt.data))
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			fields, _ := details(t, err)
			require.Equal(t, tt.fields, fields)
			if tt.quota != "" {
				var subjects []string
				for _, d := range status.Convert(err).Details() {
					if q, ok := d.(*errdetails.QuotaFailure); ok {
						subjects = append(subjects, q.GetViolations()[0].GetSubject())
					}
				}
				require.Equal(t, []string{tt.quota}, subjects)
			}
			require.Zero(t, jobs.count(), "a refused header never becomes a job")
		})
	}
}

func TestListProfiles(t *testing.T) {
	c, _ := startServer(t, newFakeJobs(), Config{NewPublisher: pubFactory(&fakePub{}), Profiles: profiles(t)})
	resp, err := c.ListProfiles(context.Background(), &spoolv1.ListProfilesRequest{})
	require.NoError(t, err)
	require.Empty(t, cmp.Diff(profiles(t).List(), resp.GetProfiles(), protocmp.Transform()))

	c, _ = startServer(t, newFakeJobs(), Config{NewPublisher: pubFactory(&fakePub{})})
	resp, err = c.ListProfiles(context.Background(), &spoolv1.ListProfilesRequest{})
	require.NoError(t, err)
	require.Empty(t, resp.GetProfiles())
}
