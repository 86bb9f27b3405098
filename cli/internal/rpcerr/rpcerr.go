// Package rpcerr turns gRPC errors into messages a person can act on: the
// status code's name, the server's message, and the fields a BadRequest
// detail names, instead of "rpc error: code = ... desc = ...". A refused
// credential, a missing permission or a TLS handshake that failed also get
// a line saying which setting to change.
package rpcerr

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Readable returns err with a readable message when it carries a gRPC
// status, and err itself otherwise. Call it on the error an RPC returned,
// before adding context: the message describes the status alone. The result
// still unwraps to err, so status.Code and errors.Is keep working on it.
func Readable(err error) error {
	if err == nil {
		return nil
	}
	var r *readable
	if errors.As(err, &r) {
		return err
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return err
	}
	return &readable{err: err, msg: Describe(se.GRPCStatus())}
}

// Describe formats st as "Code: message", followed by one indented line per
// BadRequest field violation and per exceeded limit (QuotaFailure). When
// the ingestor attached its StreamFileResponse (a file rejected for its
// rows), its row errors are listed instead, with their value excerpts.
func Describe(st *status.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", st.Code(), st.Message())
	var resp *spoolv1.StreamFileResponse
	for _, d := range st.Details() {
		if r, ok := d.(*spoolv1.StreamFileResponse); ok && len(r.GetErrors()) > 0 {
			resp = r
		}
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			if resp != nil {
				continue
			}
			for _, v := range d.GetFieldViolations() {
				fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
			}
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(&b, "\n  limit %s (raise it on the ingestor, or fix the file)", v.GetDescription())
			}
		}
	}
	if a := Advice(st); a != "" {
		fmt.Fprintf(&b, "\n  %s", a)
	}
	if resp != nil {
		for _, e := range resp.GetErrors() {
			fmt.Fprintf(&b, "\n  %s", RowError(e))
		}
		if more := resp.GetRowsRejected() - int64(len(resp.GetErrors())); more > 0 {
			fmt.Fprintf(&b, "\n  ... and %d more invalid rows", more)
		}
	}
	return b.String()
}

// The client settings a piece of advice names (see platform/clientauth).
const settingsHint = "after 'make up', .spool/stack.env holds them"

// transportAdvice maps what gRPC reports of a failed connection to what to
// change. gRPC reports each as Unavailable, with the TLS library's words in
// the message; the first match wins.
var transportAdvice = []struct{ symptom, advice string }{
	// A plaintext client's HTTP/2 preface is not a TLS ClientHello: a TLS
	// server closes the connection without a word.
	{"error reading server preface", "the server closed the connection before speaking gRPC: it probably wants TLS; set SPOOL_CA_FILE to the CA that signed its certificate (" + settingsHint + ")"},
	{"first record does not look like a TLS handshake", "the server speaks plaintext, this client TLS (SPOOL_CA_FILE, SPOOL_TOKEN or a client certificate is set): unset them for a server run with SPOOL_INSECURE=true, or check the address"},
	{"certificate signed by unknown authority", "the server's certificate is not signed by the CA in SPOOL_CA_FILE (without it, by a system root): point SPOOL_CA_FILE at the CA that signed it"},
	{"certificate is not valid for", "the server's certificate does not name the host dialled: use an address its certificate names"},
	{"doesn't contain any IP SANs", "the server's certificate does not name the IP address dialled: use an address its certificate names"},
	{"certificate has expired", "a certificate has expired (the server's, or the client's in SPOOL_CLIENT_CERT_FILE)"},
	{"tls: certificate required", "the server wants a client certificate: set SPOOL_CLIENT_CERT_FILE and SPOOL_CLIENT_KEY_FILE"},
	{"tls: bad certificate", "the server refused the client certificate in SPOOL_CLIENT_CERT_FILE: it is not signed by the CA the server trusts"},
}

// Advice returns one line saying which setting to change after st, or ""
// when there is nothing a setting can fix. It never echoes a credential:
// the server's message names what was wrong, not the token.
func Advice(st *status.Status) string {
	switch st.Code() {
	case codes.Unauthenticated:
		return "the server did not accept the caller's credential: set SPOOL_TOKEN (or SPOOL_TOKEN_FILE) to a valid, unexpired token (" + settingsHint + ")"
	case codes.PermissionDenied:
		return "the caller's roles do not grant this: use a token of a role that does (README: Security)"
	case codes.Unavailable:
		for _, t := range transportAdvice {
			if strings.Contains(st.Message(), t.symptom) {
				return t.advice
			}
		}
	}
	return ""
}

// RowError formats one invalid row: "row 12, column amount: reason (value
// "1,5")". The excerpt may be payroll data; it is shown to the person who
// sent it, never logged.
func RowError(e *spoolv1.RowError) string {
	s := fmt.Sprintf("row %d", e.GetRow())
	if e.GetRow() == 0 {
		s = "header"
	}
	if c := e.GetColumn(); c != "" {
		s += ", column " + c
	}
	s += ": " + e.GetReason()
	if x := e.GetExcerpt(); x != "" {
		s += fmt.Sprintf(" (value %q)", x)
	}
	return s
}

type readable struct {
	err error
	msg string
}

func (r *readable) Error() string { return r.msg }
func (r *readable) Unwrap() error { return r.err }
