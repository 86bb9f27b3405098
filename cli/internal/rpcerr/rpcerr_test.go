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
		{
			name: "no credential",
			err:  status.Error(codes.Unauthenticated, "no bearer token or client certificate"),
			want: "Unauthenticated: no bearer token or client certificate\n  the server did not accept the caller's credential: set SPOOL_TOKEN (or SPOOL_TOKEN_FILE) to a valid, unexpired token (after 'make up', .spool/stack.env holds them)",
			code: codes.Unauthenticated,
		},
		{
			name: "missing permission",
			err:  status.Error(codes.PermissionDenied, `permission "resolve" required`),
			want: "PermissionDenied: permission \"resolve\" required\n  the caller's roles do not grant this: use a token of a role that does (README: Security)",
			code: codes.PermissionDenied,
		},
		{
			name: "plaintext client, TLS server",
			err:  status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: EOF"`),
			want: "Unavailable: connection error: desc = \"error reading server preface: EOF\"\n  the server closed the connection before speaking gRPC: it probably wants TLS; set SPOOL_CA_FILE to the CA that signed its certificate (after 'make up', .spool/stack.env holds them)",
			code: codes.Unavailable,
		},
		{
			name: "unknown CA",
			err:  status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`),
			want: "Unavailable: connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"\n  the server's certificate is not signed by the CA in SPOOL_CA_FILE (without it, by a system root): point SPOOL_CA_FILE at the CA that signed it",
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

func TestAdvice(t *testing.T) {
	tests := []struct {
		name string
		st   *status.Status
		want string // a substring; empty means no advice
	}{
		{name: "not found", st: status.New(codes.NotFound, "job j1 not found")},
		{name: "refused connection", st: status.New(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)},
		{name: "TLS client, plaintext server", st: status.New(codes.Unavailable, "transport: authentication handshake failed: tls: first record does not look like a TLS handshake"), want: "the server speaks plaintext"},
		{name: "wrong host", st: status.New(codes.Unavailable, "x509: certificate is not valid for any names, but wanted to match ingestor"), want: "does not name the host"},
		{name: "IP not in the certificate", st: status.New(codes.Unavailable, "x509: cannot validate certificate for 10.0.0.1 because it doesn't contain any IP SANs"), want: "IP address dialled"},
		{name: "client certificate wanted", st: status.New(codes.Unavailable, "remote error: tls: certificate required"), want: "SPOOL_CLIENT_CERT_FILE and SPOOL_CLIENT_KEY_FILE"},
		{name: "client certificate refused", st: status.New(codes.Unavailable, "remote error: tls: bad certificate"), want: "refused the client certificate"},
		{name: "expired", st: status.New(codes.Unavailable, "x509: certificate has expired or is not yet valid"), want: "has expired"},
		{name: "unauthenticated", st: status.New(codes.Unauthenticated, "token expired"), want: "SPOOL_TOKEN"},
		{name: "permission", st: status.New(codes.PermissionDenied, `permission "redrive" required`), want: "roles do not grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Advice(tt.st)
			if tt.want == "" {
				require.Empty(t, got)
				return
			}
			require.Contains(t, got, tt.want)
		})
	}
}
