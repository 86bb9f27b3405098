package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/spoolhq/spool/platform/clientauth"
	"github.com/spoolhq/spool/platform/devpki"
)

// TokenTTL is how long the tokens a stack mints stay valid: a working day,
// so a stack brought up in the morning serves the CLI until the evening.
// `make up` again mints new ones.
const TokenTTL = 24 * time.Hour

// PKIDir is the folder of `make up`'s state folder that holds the local
// stack's throwaway PKI. It is kept across restarts, so a CA a user told a
// tool to trust stays.
const PKIDir = "pki"

// role is one role of devpki's policy and the token the stack mints for it.
type role struct {
	// name is the role in the token's roles claim.
	name string
	// env is the variable of stack.env that carries the token.
	env string
	// subject is who the token says is calling; the audit trail records it.
	subject string
}

// roles are the tokens stack.env carries. SPOOL_TOKEN, which the CLI
// sends, holds every permission; the others let a person try each role
// (the approver is a second operator, for four-eyes approval).
var roles = []role{
	{name: "admin", env: clientauth.EnvToken, subject: "local-admin"},
	{name: "submitter", env: "SPOOL_TOKEN_SUBMITTER", subject: "local-submitter"},
	{name: "viewer", env: "SPOOL_TOKEN_VIEWER", subject: "local-viewer"},
	{name: "operator", env: "SPOOL_TOKEN_OPERATOR", subject: "local-operator"},
	{name: "approver", env: "SPOOL_TOKEN_APPROVER", subject: "local-approver"},
}

// localServiceEnv is what every service of the local stack gets besides
// the PKI's settings: its servers answer grpcurl (reflection is off by
// default elsewhere).
var localServiceEnv = []string{"SPOOL_GRPC_REFLECTION=true"}

// insecureServiceEnv is what a stack without a PKI gives its services
// instead: plaintext, no authentication.
var insecureServiceEnv = append([]string{"SPOOL_INSECURE=true"}, localServiceEnv...)

// authEnv mints a token per role of pki. It returns the settings of the
// services and those of the clients.
func authEnv(pki *devpki.PKI) (serviceEnv, clientEnv []string, tokens map[string]string, err error) {
	serviceEnv = append(pki.ServerEnv(), localServiceEnv...)
	clientEnv = []string{clientauth.EnvCAFile + "=" + pki.CAFile()}
	tokens = map[string]string{}
	for _, r := range roles {
		tok, err := pki.Token(r.subject, []string{r.name}, TokenTTL)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("mint %s token: %w", r.name, err)
		}
		tokens[r.name] = tok
		clientEnv = append(clientEnv, r.env+"="+tok)
	}
	return serviceEnv, clientEnv, tokens, nil
}

// ClientConfig returns the client settings of the stack with the token of
// role ("admin", "submitter", "viewer", "operator", "approver"; "" for
// none): what a test dials the services with.
func (s *Stack) ClientConfig(role string) (clientauth.Config, error) {
	if s.opts.PKI == nil {
		return clientauth.Config{}, nil
	}
	c := clientauth.Config{CAFile: s.opts.PKI.CAFile()}
	if role != "" {
		tok, ok := s.Tokens[role]
		if !ok {
			return clientauth.Config{}, fmt.Errorf("no token for role %q (have %s)", role, strings.Join(roleNames(), ", "))
		}
		c.Token = tok
	}
	return c, nil
}

// DialOptions returns the options to dial a service of the stack as role.
func (s *Stack) DialOptions(role string) ([]grpc.DialOption, error) {
	c, err := s.ClientConfig(role)
	if err != nil {
		return nil, err
	}
	return c.DialOptions()
}

func roleNames() []string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = r.name
	}
	return names
}

// TokensDir is the folder of a PKI written by WritePKI that holds one file
// per role, named for the role, for clients that read SPOOL_TOKEN_FILE.
const TokensDir = "tokens"

// WritePKI makes (or reuses) a PKI in dir and writes a fresh token per role
// to dir/tokens/<role>, for a stack whose processes share a folder rather
// than an environment (docker-compose). The server certificate names the
// loopback names and hosts (the names clients dial, such as compose
// service names). It returns the token files.
func WritePKI(dir string, hosts ...string) ([]string, error) {
	pki, err := devpki.New(dir, hosts...)
	if err != nil {
		return nil, fmt.Errorf("make pki: %w", err)
	}
	_, _, tokens, err := authEnv(pki)
	if err != nil {
		return nil, err
	}
	tdir := filepath.Join(dir, TokensDir)
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return nil, fmt.Errorf("make tokens folder: %w", err)
	}
	var files []string
	for _, r := range roles {
		path := filepath.Join(tdir, r.name)
		if err := os.WriteFile(path, []byte(tokens[r.name]+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write %s token: %w", r.name, err)
		}
		files = append(files, path)
	}
	return files, nil
}
