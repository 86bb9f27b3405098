package auth

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Rules maps a gRPC full method name ("/spool.v1.IngestService/GetJob") to
// the permissions that admit a call to it: holding any one of them is
// enough. A method that is not in the map is refused, so an RPC added
// without a rule is closed until someone decides who may call it.
type Rules map[string][]Permission

// Authenticator decides who is calling and whether they may call the
// method. It is the AuthFunc of go-grpc-middleware's auth interceptor.
type Authenticator struct {
	tokens *TokenVerifier
	policy *Policy
	rules  Rules
	log    *slog.Logger
}

// NewAuthenticator returns an authenticator. tokens may be nil when callers
// prove themselves only with client certificates.
func NewAuthenticator(tokens *TokenVerifier, policy *Policy, rules Rules, log *slog.Logger) *Authenticator {
	return &Authenticator{tokens: tokens, policy: policy, rules: rules, log: log}
}

// Authenticate establishes the caller of the call ctx belongs to, checks
// the method's rule, and returns ctx carrying the Principal. A bearer token,
// when sent, decides the caller even over a client certificate: the token
// is the more specific claim (a person using a service's machine).
func (a *Authenticator) Authenticate(ctx context.Context) (context.Context, error) {
	method, _ := grpc.Method(ctx)
	id, err := a.identify(ctx)
	if err != nil {
		refused(ctx, a.log, method, "", "", codes.Unauthenticated, err.Error())
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	p := a.policy.Grant(id)
	needed, ok := a.rules[method]
	if !ok {
		refused(ctx, a.log, method, p.Subject, "", codes.PermissionDenied, "no rule for method")
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not open to anyone", method)
	}
	for _, perm := range needed {
		if p.Has(perm) {
			return NewContext(ctx, p), nil
		}
	}
	msg := permissionMessage(needed)
	refused(ctx, a.log, method, p.Subject, joinPermissions(needed), codes.PermissionDenied, msg)
	return nil, status.Error(codes.PermissionDenied, msg)
}

// Denied returns the PermissionDenied error naming perm, logging the
// refusal with the caller and method as the interceptor does (nil log: not
// logged). Handlers use it for checks that depend on what a call carries.
func Denied(ctx context.Context, log *slog.Logger, perm Permission) error {
	msg := permissionMessage([]Permission{perm})
	if log != nil {
		method, _ := grpc.Method(ctx)
		p, _ := FromContext(ctx)
		refused(ctx, log, method, p.Subject, string(perm), codes.PermissionDenied, msg)
	}
	return status.Error(codes.PermissionDenied, msg)
}

func permissionMessage(perms []Permission) string {
	if len(perms) == 1 {
		return fmt.Sprintf("permission %q required", perms[0])
	}
	q := make([]string, len(perms))
	for i, p := range perms {
		q[i] = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("permission %s required", strings.Join(q, " or "))
}

func joinPermissions(perms []Permission) string {
	s := make([]string, len(perms))
	for i, p := range perms {
		s[i] = string(p)
	}
	return strings.Join(s, "|")
}

// refused logs a refusal, the interceptor's or a handler's. It never logs
// the token, only what was wrong.
func refused(ctx context.Context, log *slog.Logger, method, subject, perm string, code codes.Code, reason string) {
	log.WarnContext(ctx, "call refused", "method", method, "subject", subject, "permission", perm,
		"code", code.String(), "reason", reason)
}

// identify returns the caller's identity from its bearer token, or else
// from its verified client certificate.
func (a *Authenticator) identify(ctx context.Context) (Identity, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch {
	case len(vals) > 1:
		return Identity{}, fmt.Errorf("more than one authorization header")
	case len(vals) == 1:
		scheme, token, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
			return Identity{}, fmt.Errorf("authorization header is not \"Bearer <token>\"")
		}
		if a.tokens == nil {
			return Identity{}, fmt.Errorf("bearer tokens are not accepted by this server")
		}
		id, err := a.tokens.Verify(ctx, strings.TrimSpace(token))
		if err != nil {
			return Identity{}, fmt.Errorf("invalid bearer token: %w", err)
		}
		return id, nil
	}
	if pr, ok := peer.FromContext(ctx); ok {
		if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			cn := info.State.VerifiedChains[0][0].Subject.CommonName
			if cn == "" {
				return Identity{}, fmt.Errorf("client certificate has no common name")
			}
			return Identity{Subject: cn, Method: MethodMTLS}, nil
		}
	}
	return Identity{}, fmt.Errorf("no credential: send \"authorization: Bearer <token>\" or a client certificate")
}
