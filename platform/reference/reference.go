// Package reference finds the third party's reference for a transaction in
// its accepting answer: the payment id a finance team reconciles against.
//
// Where the reference is differs per destination, so it is configured as a
// spec: "body:" and a JSON pointer (RFC 6901) into the JSON body, e.g.
// "body:/id" or "body:/data/payment/id", or "header:" and a header name,
// e.g. "header:Location". The dispatcher has one spec per destination
// (SPOOL_REFERENCE_FROM) and a file's profile may name its own, which the
// ingestor checks with Parse before the file is accepted, and which
// travels to the dispatcher in each row's envelope.
package reference

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// MaxLen bounds a reference as kept in the delivery ledger: a reference is
// an id, and a longer value is cut (and said to be) rather than letting a
// destination's answer grow every ledger record.
const MaxLen = 256

// From says where a reference is found. The zero value finds none.
type From struct {
	header  string
	pointer []string
	body    bool
}

// Parse reads a spec; an empty spec is the zero From.
func Parse(spec string) (From, error) {
	switch {
	case spec == "":
		return From{}, nil
	case strings.HasPrefix(spec, "header:"):
		name := strings.TrimSpace(strings.TrimPrefix(spec, "header:"))
		if name == "" || strings.ContainsAny(name, " \t:\r\n") {
			return From{}, fmt.Errorf("reference spec %q: want header:NAME with a header name", spec)
		}
		return From{header: http.CanonicalHeaderKey(name)}, nil
	case strings.HasPrefix(spec, "body:"):
		ptr := strings.TrimPrefix(spec, "body:")
		tokens, err := parsePointer(ptr)
		if err != nil {
			return From{}, fmt.Errorf("reference spec %q: %w", spec, err)
		}
		return From{pointer: tokens, body: true}, nil
	}
	return From{}, fmt.Errorf("reference spec %q: want body:/json/pointer or header:NAME", spec)
}

// parsePointer splits an RFC 6901 pointer into its unescaped tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("JSON pointer %q must start with /", p)
	}
	parts := strings.Split(p[1:], "/")
	for i, t := range parts {
		if strings.Contains(strings.ReplaceAll(strings.ReplaceAll(t, "~0", ""), "~1", ""), "~") {
			return nil, fmt.Errorf("JSON pointer %q: ~ must be followed by 0 or 1", p)
		}
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

// IsZero says f finds nothing.
func (f From) IsZero() bool { return f.header == "" && !f.body }

// NeedsBody says the reference is in the body, which must then be read.
func (f From) NeedsBody() bool { return f.body }

// String is the spec f was parsed from (in canonical form).
func (f From) String() string {
	switch {
	case f.header != "":
		return "header:" + f.header
	case f.body:
		var b strings.Builder
		b.WriteString("body:")
		for _, t := range f.pointer {
			b.WriteString("/" + strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1"))
		}
		return b.String()
	}
	return ""
}

// Extract returns the reference in an answer's header and body, bounded
// to MaxLen bytes (truncated says it was cut), and "" when the answer has
// none where f looks. A string is taken as it is, a number with its
// digits; an object, array, boolean or null is not a reference.
func (f From) Extract(h http.Header, body []byte) (ref string, truncated bool) {
	switch {
	case f.header != "":
		ref = h.Get(f.header)
	case f.body:
		ref = pointerValue(body, f.pointer)
	}
	return Bound(ref)
}

// Bound cuts ref to MaxLen bytes on a rune boundary, as a dead letter's
// reason is cut: the bytes of a rune the cut split are dropped.
func Bound(ref string) (string, bool) {
	if len(ref) <= MaxLen {
		return ref, false
	}
	return strings.ToValidUTF8(ref[:MaxLen], ""), true
}

func pointerValue(body []byte, tokens []string) string {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return ""
	}
	for _, t := range tokens {
		switch node := v.(type) {
		case map[string]any:
			v = node[t]
		case []any:
			i, err := strconv.Atoi(t)
			if err != nil || i < 0 || i >= len(node) || (len(t) > 1 && t[0] == '0') {
				return ""
			}
			v = node[i]
		default:
			return ""
		}
	}
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	}
	return ""
}
