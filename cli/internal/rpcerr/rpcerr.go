// Package rpcerr turns gRPC errors into messages a person can act on: the
// status code's name, the server's message, and the fields a BadRequest
// detail names, instead of "rpc error: code = ... desc = ...".
package rpcerr

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
