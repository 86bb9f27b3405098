package profile

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Set is the profiles configured on an ingestor, by name.
type Set struct {
	list []*spoolv1.Profile
}

// Load reads a profile file: YAML or JSON (JSON is YAML too), a list of
// profiles under "profiles", in the fields of spool.v1.Profile (snake_case
// or lowerCamelCase). Enum values may be written short and in lower case:
// row_policy: skip-rows, type: decimal, meta: transaction_key.
func Load(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	set, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("profiles %s: %w", filepath.Base(path), err)
	}
	return set, nil
}

// Parse reads the contents of a profile file; see Load.
func Parse(data []byte) (*Set, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	js, err := json.Marshal(shortEnums(doc, ""))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var file spoolv1.ListProfilesResponse
	if err := protojson.Unmarshal(js, &file); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	set := &Set{}
	seen := map[string]bool{}
	for i, p := range file.GetProfiles() {
		if err := Check(p); err != nil {
			return nil, fmt.Errorf("profile %d: %w", i+1, err)
		}
		if seen[p.GetName()] {
			return nil, fmt.Errorf("profile %d: name %q appears twice", i+1, p.GetName())
		}
		seen[p.GetName()] = true
		set.list = append(set.list, p)
	}
	return set, nil
}

// enumPrefixes are the fields whose values may be written short, and the
// prefix of their enum's value names.
var enumPrefixes = map[string]string{
	"row_policy": "ROW_POLICY_", "rowPolicy": "ROW_POLICY_",
	"formula_policy": "FORMULA_POLICY_", "formulaPolicy": "FORMULA_POLICY_",
	"type": "COLUMN_TYPE_",
	"meta": "BODY_META_",
}

// shortEnums rewrites short enum values ("skip-rows") to their full names
// ("ROW_POLICY_SKIP_ROWS") and makes YAML's maps JSON-encodable.
func shortEnums(v any, key string) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = shortEnums(e, k)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = shortEnums(e, key)
		}
		return t
	case string:
		if prefix, ok := enumPrefixes[key]; ok && !strings.HasPrefix(t, prefix) {
			return prefix + strings.ToUpper(strings.ReplaceAll(t, "-", "_"))
		}
	}
	return v
}

// Get returns the profile named name.
func (s *Set) Get(name string) (*spoolv1.Profile, bool) {
	if s == nil {
		return nil, false
	}
	for _, p := range s.list {
		if p.GetName() == name {
			return p, true
		}
	}
	return nil, false
}

// List returns every profile, in the file's order.
func (s *Set) List() []*spoolv1.Profile {
	if s == nil {
		return nil
	}
	out := make([]*spoolv1.Profile, len(s.list))
	for i, p := range s.list {
		out[i] = proto.Clone(p).(*spoolv1.Profile)
	}
	return out
}
