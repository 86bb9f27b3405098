package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
)

// Policy grants roles to callers and permissions to roles. It is read from
// a JSON file of this shape:
//
//	{
//	  "roles": {"operator": ["view", "operate", "resolve", "redrive"]},
//	  "bindings": [
//	    {"subject": "alice@example.com", "roles": ["operator"]},
//	    {"certificate": "payroll-batch", "roles": ["submitter"]},
//	    {"claim": "groups", "value": "payments-ops", "roles": ["operator"]}
//	  ]
//	}
//
// A binding names exactly one of: a token's subject, a client
// certificate's common name, or a token claim and a value it must hold (a
// string claim equal to it, or an array claim containing it). Subjects and
// certificate names are kept apart on purpose: a token whose subject happens
// to equal a certificate's name gets nothing the certificate was granted.
type Policy struct {
	roles    map[string][]Permission
	bindings []binding
}

type binding struct {
	Subject     string   `json:"subject,omitempty"`
	Certificate string   `json:"certificate,omitempty"`
	Claim       string   `json:"claim,omitempty"`
	Value       string   `json:"value,omitempty"`
	Roles       []string `json:"roles"`
}

type policyFile struct {
	Roles    map[string][]Permission `json:"roles"`
	Bindings []binding               `json:"bindings"`
}

// Permissions lists every permission a policy may grant.
var Permissions = []Permission{PermSubmit, PermView, PermOperate, PermResolve, PermRedrive, PermInlineKeys}

// LoadPolicy reads and checks the policy file at path.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read auth policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("auth policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy checks a policy and reports every problem at once: unknown
// fields, unknown permissions, bindings to undefined roles, and bindings
// that name no principal or more than one kind of principal.
func ParsePolicy(b []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f policyFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var errs []error
	if len(f.Roles) == 0 {
		errs = append(errs, errors.New("no roles defined"))
	}
	for _, name := range slices.Sorted(maps.Keys(f.Roles)) {
		for _, perm := range f.Roles[name] {
			if !slices.Contains(Permissions, perm) {
				errs = append(errs, fmt.Errorf("role %q: unknown permission %q (known: %v)", name, perm, Permissions))
			}
		}
	}
	if len(f.Bindings) == 0 {
		errs = append(errs, errors.New("no bindings: nobody would be granted anything"))
	}
	for i, b := range f.Bindings {
		kinds := 0
		for _, s := range []string{b.Subject, b.Certificate, b.Claim} {
			if s != "" {
				kinds++
			}
		}
		switch {
		case kinds != 1:
			errs = append(errs, fmt.Errorf("binding %d: name exactly one of subject, certificate or claim", i))
		case b.Claim != "" && b.Value == "":
			errs = append(errs, fmt.Errorf("binding %d: claim %q needs a value", i, b.Claim))
		case b.Claim == "" && b.Value != "":
			errs = append(errs, fmt.Errorf("binding %d: value without a claim", i))
		}
		if len(b.Roles) == 0 {
			errs = append(errs, fmt.Errorf("binding %d: no roles", i))
		}
		for _, r := range b.Roles {
			if _, ok := f.Roles[r]; !ok {
				errs = append(errs, fmt.Errorf("binding %d: undefined role %q", i, r))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Policy{roles: f.Roles, bindings: f.Bindings}, nil
}

// Identity is what authentication established about a caller, before the
// policy says what it may do.
type Identity struct {
	Subject string
	// Method is "jwt" or "mtls".
	Method string
	// Claims are a token's claims; nil for a certificate.
	Claims map[string]any
}

// Grant returns the principal id is, with the roles and permissions the
// policy gives it (none when no binding matches).
func (p *Policy) Grant(id Identity) Principal {
	pr := Principal{Subject: id.Subject, Method: id.Method}
	for _, b := range p.bindings {
		if !b.matches(id) {
			continue
		}
		for _, r := range b.Roles {
			if slices.Contains(pr.Roles, r) {
				continue
			}
			pr.Roles = append(pr.Roles, r)
			for _, perm := range p.roles[r] {
				if !slices.Contains(pr.Permissions, perm) {
					pr.Permissions = append(pr.Permissions, perm)
				}
			}
		}
	}
	return pr
}

func (b binding) matches(id Identity) bool {
	switch {
	case b.Certificate != "":
		return id.Method == MethodMTLS && id.Subject == b.Certificate
	case b.Subject != "":
		return id.Method == MethodJWT && id.Subject == b.Subject
	case b.Claim != "":
		if id.Method != MethodJWT {
			return false
		}
		switch v := id.Claims[b.Claim].(type) {
		case string:
			return v == b.Value
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok && s == b.Value {
					return true
				}
			}
		}
	}
	return false
}

// How a caller proved who it is.
const (
	MethodJWT  = "jwt"
	MethodMTLS = "mtls"
)
