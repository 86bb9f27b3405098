// Package auth is the one place that says who is calling and what they may
// do. The gRPC servers put the authenticated caller into each call's context
// (the interceptor lives beside this file); handlers that record who acted —
// the audit trail, four-eyes approval, the submitter of a job — read it back
// with FromContext, never from metadata of their own.
package auth

import "context"

// Permission is a right one RPC needs. Policies grant permissions to roles
// and roles to principals; handlers and the interceptor speak only in
// permissions.
type Permission string

// The permissions Spool checks. Each RPC needs exactly one of them (health
// needs none); some actions inside an RPC need a second one (an inline
// profile that declares business keys).
const (
	// PermSubmit lets a caller stream a file and read its own jobs.
	PermSubmit Permission = "submit"
	// PermView lets a caller read any job, its report, its dead letters and
	// the dispatchers' status.
	PermView Permission = "view"
	// PermOperate lets a caller pause, resume and cancel jobs.
	PermOperate Permission = "operate"
	// PermResolve lets a caller settle an UNKNOWN row (DELIVERED or RESEND).
	PermResolve Permission = "resolve"
	// PermRedrive lets a caller send dead letters back to the queue.
	PermRedrive Permission = "redrive"
	// PermInlineKeys lets a caller send an inline profile that declares
	// business keys, which decide what counts as a duplicate payment.
	PermInlineKeys Permission = "inline-business-keys"
)

// Principal is an authenticated caller.
type Principal struct {
	// Subject names the caller: a token's subject, or the common name of a
	// client certificate. It is what the audit trail records.
	Subject string
	// Method says how the caller proved it: "mtls" or "jwt".
	Method string
	// Roles are the policy's roles the caller holds.
	Roles []string
	// Permissions are what those roles grant.
	Permissions []Permission
}

// Has reports whether p holds permission perm.
func (p Principal) Has(perm Permission) bool {
	for _, q := range p.Permissions {
		if q == perm {
			return true
		}
	}
	return false
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller of the call ctx belongs to, and false when
// no one was authenticated (a server run without auth, or a call exempt from
// it, such as health checking).
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
