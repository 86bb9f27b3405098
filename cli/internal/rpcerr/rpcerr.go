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
// BadRequest field violation.
func Describe(st *status.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", st.Code(), st.Message())
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
		}
	}
	return b.String()
}

type readable struct {
	err error
	msg string
}

func (r *readable) Error() string { return r.msg }
func (r *readable) Unwrap() error { return r.err }
