package rpcerr

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestReadable(t *testing.T) {
	bad, err := status.New(codes.InvalidArgument, "bad header").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "header.csv.delimiter", Description: "must be one character"},
			{Field: "header.columns", Description: "duplicate column amount"},
		},
	})
	require.NoError(t, err)
	limit, err := status.New(codes.ResourceExhausted, "row 3, column 2 (note): max-field-bytes=65536 exceeded").WithDetails(&errdetails.QuotaFailure{
		Violations: []*errdetails.QuotaFailure_Violation{{Subject: "max-field-bytes", Description: "max-field-bytes=65536"}},
	})
	require.NoError(t, err)
	rows, err := status.New(codes.InvalidArgument, "job j1 rejected").WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "row 2, column amount", Description: "not a decimal number"}}},
		&spoolv1.StreamFileResponse{RowsRejected: 3, Errors: []*spoolv1.RowError{{Row: 2, Column: "amount", Reason: "not a decimal number", Excerpt: "1,5"}}},
	)
	require.NoError(t, err)
	tests := []struct {
		name string
		err  error
		want string
		code codes.Code
	}{
		{name: "plain error untouched", err: errors.New("disk full"), want: "disk full", code: codes.Unknown},
		{name: "status", err: status.Error(codes.NotFound, "job j1 not found"), want: "NotFound: job j1 not found", code: codes.NotFound},
		{
			name: "bad request violations",
			err:  bad.Err(),
			want: "InvalidArgument: bad header\n  header.csv.delimiter: must be one character\n  header.columns: duplicate column amount",
			code: codes.InvalidArgument,
		},
		{
			name: "limit",
			err:  limit.Err(),
			want: "ResourceExhausted: row 3, column 2 (note): max-field-bytes=65536 exceeded\n  limit max-field-bytes=65536 (raise it on the ingestor, or fix the file)",
			code: codes.ResourceExhausted,
		},
		{
			name: "rejected rows with excerpts",
			err:  rows.Err(),
			want: "InvalidArgument: job j1 rejected\n  row 2, column amount: not a decimal number (value \"1,5\")\n  ... and 2 more invalid rows",
			code: codes.InvalidArgument,
		},
		{
			name: "wrapped status keeps the outer context out of the status line",
			err:  fmt.Errorf("get job: %w", status.Error(codes.Unavailable, "connection refused")),
			want: "Unavailable: connection refused",
			code: codes.Unavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Readable(tt.err)
			require.EqualError(t, got, tt.want)
			require.ErrorIs(t, got, tt.err)
			require.Equal(t, tt.code, status.Code(got))
			require.Equal(t, got, Readable(got), "idempotent")
		})
	}
	require.NoError(t, Readable(nil))
}
