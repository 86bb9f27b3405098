package ingest

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/envelope"
)

// mapping is a profile that maps rows to a body of their own, with a
// business key and an amount.
var mapping = &spoolv1.Profile{
	Name: "mapped", RowPolicy: spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS, FormulaPolicy: spoolv1.FormulaPolicy_FORMULA_POLICY_ALLOW,
	Columns: []*spoolv1.ColumnSpec{
		{Name: "id"},
		{Name: "amount", Type: spoolv1.ColumnType_COLUMN_TYPE_DECIMAL, Scale: 2},
	},
	BusinessKeyColumns: []string{"id"}, AmountColumn: "amount", ReferenceFrom: "header:Location",
	Body: []*spoolv1.BodyField{
		{Name: "employee", Source: &spoolv1.BodyField_Column{Column: "id"}},
		{Name: "value", Source: &spoolv1.BodyField_Column{Column: "amount"}, AsNumber: true},
		{Name: "ref", Source: &spoolv1.BodyField_Meta{Meta: spoolv1.BodyMeta_BODY_META_TRANSACTION_KEY}},
	},
}

const mappedFile = "id,amount\ne1,10.50\ne2,oops\ne3,3.00\ne4,4.25\n"

func TestDryRunChecksAndMapsLikeARealRun(t *testing.T) {
	// The real run, for what its envelopes are.
	jobs, pub := newFakeJobs(), &fakePub{}
	c, _ := startServer(t, jobs, Config{NewPublisher: pubFactory(pub), MaxErrors: 10})
	real, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{FileName: "pay.csv", InlineProfile: mapping}), chunkMsg(mappedFile))
	require.NoError(t, err)
	require.Equal(t, spoolv1.JobState_JOB_STATE_SEALED, real.GetJob().GetState())

	// The dry run, on a server whose every job is the real run's: a key of
	// a sealed job does not stop it.
	ps := &pubs{}
	c, logs := startServer(t, jobs, Config{NewPublisher: ps.factory(), MaxErrors: 10})
	dry, err := send(context.Background(), c, hdr(&spoolv1.FileHeader{
		FileName: "pay.csv", JobKey: real.GetJob().GetJobKey(), InlineProfile: mapping, DryRun: true, PreviewRows: 2,
		Control: &spoolv1.ControlTotals{RowCount: proto.Int64(4), AmountSum: "17.75"},
	}), chunkMsg(mappedFile))
	require.NoError(t, err)
	require.Equal(t, 1, jobs.count(), "a dry run creates no job")
	require.Empty(t, ps.all, "a dry run starts no publisher")
	require.Empty(t, dry.GetJobId())
	require.Equal(t, real.GetRowsReceived(), dry.GetRowsReceived())
	require.Equal(t, real.GetRowsPublished(), dry.GetRowsPublished())
	require.Equal(t, real.GetRowsRejected(), dry.GetRowsRejected())
	require.Equal(t, real.GetErrors()[0].GetReason(), dry.GetErrors()[0].GetReason())
	require.Equal(t, "17.75", dry.GetJob().GetActual().GetAmountSum())
	require.EqualValues(t, 3, dry.GetJob().GetTotal())

	require.Len(t, dry.GetPreview(), 2)
	for i, got := range dry.GetPreview() {
		// The preview is what a dispatcher delivers: the real run's V2
		// envelope, named from the job's columns.
		want := pub.envelopes()[i]
		require.Equal(t, spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, want.GetVersion())
		require.NoError(t, envelope.Expand(want, real.GetJob().GetColumns()))
		require.Equal(t, spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, got.GetVersion())
		require.Equal(t, DryRunJobID, got.GetJobId())
		require.Equal(t, want.GetRow(), got.GetRow())
		require.Equal(t, want.GetFields(), got.GetFields())
		require.Equal(t, want.GetTransactionKey(), got.GetTransactionKey(), "business keys do not depend on the job")
		require.Equal(t, want.GetBody(), got.GetBody())
		require.Equal(t, "header:Location", got.GetReferenceFrom())
	}
	require.Equal(t, `{"employee":"e1","value":10.50,"ref":"`+pub.envelopes()[0].GetTransactionKey()+`"}`, dry.GetPreview()[0].GetBody())
	require.Contains(t, logs.String(), "dry run")
}

func TestDryRunRefusals(t *testing.T) {
	strict := proto.CloneOf(mapping)
	strict.RowPolicy = spoolv1.RowPolicy_ROW_POLICY_REJECT_FILE
	tests := []struct {
		name    string
		cfg     Config
		header  *spoolv1.FileHeader
		file    string
		wantErr string
		// wantRowErr, when set, is the reason of the first row error.
		wantRowErr string
	}{
		{
			name: "an invalid row under reject-file", header: &spoolv1.FileHeader{InlineProfile: strict, DryRun: true}, file: mappedFile,
			wantErr: "dry run: the file would be rejected, nothing delivered: 1 invalid rows of 4",
		},
		{
			name:   "a control total that does not match",
			header: &spoolv1.FileHeader{InlineProfile: mapping, DryRun: true, Control: &spoolv1.ControlTotals{AmountSum: "1.00"}}, file: mappedFile,
			wantErr: "dry run: the file would be rejected, nothing delivered: control totals do not match: amount_sum declared 1.00, actual 17.75",
		},
		{
			name: "a row too large for the queue", cfg: Config{MaxMessageBytes: 300},
			header: &spoolv1.FileHeader{InlineProfile: lenient, DryRun: true}, file: "id,amount\ne1,1\ne2," + strings.Repeat("9", 400) + "\n",
			wantRowErr: "exceeds max-message-bytes=300",
		},
		{name: "a resume", header: &spoolv1.FileHeader{JobKey: "k", DryRun: true, Resume: &spoolv1.Resume{}}, file: "a\n1\n", wantErr: "a dry run cannot resume"},
		{name: "a preview without a dry run", header: &spoolv1.FileHeader{PreviewRows: 3}, file: "a\n1\n", wantErr: "preview_rows 3 without dry_run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs, ps := newFakeJobs(), &pubs{}
			tt.cfg.NewPublisher, tt.cfg.MaxErrors = ps.factory(), 10
			c, _ := startServer(t, jobs, tt.cfg)
			resp, err := send(context.Background(), c, hdr(tt.header), chunkMsg(tt.file))
			require.Zero(t, jobs.count())
			require.Empty(t, ps.all)
			if tt.wantErr != "" {
				require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.EqualValues(t, 1, resp.GetRowsRejected())
			require.Contains(t, resp.GetErrors()[0].GetReason(), tt.wantRowErr)
		})
	}
}
