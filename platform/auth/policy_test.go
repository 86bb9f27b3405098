package auth

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePolicyRefuses(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		wantErr []string
	}{
		{name: "not json", policy: `{`, wantErr: []string{"decode"}},
		{name: "unknown field", policy: `{"roles": {"r": ["view"]}, "bindings": [{"subject": "a", "roles": ["r"]}], "extra": 1}`, wantErr: []string{"unknown field"}},
		{name: "empty", policy: `{}`, wantErr: []string{"no roles", "no bindings"}},
		{
			name:    "unknown permission",
			policy:  `{"roles": {"r": ["view", "approve-everything"]}, "bindings": [{"subject": "a", "roles": ["r"]}]}`,
			wantErr: []string{`role "r": unknown permission "approve-everything"`},
		},
		{
			name: "bad bindings",
			policy: `{"roles": {"r": ["view"]}, "bindings": [
				{"roles": ["r"]},
				{"subject": "a", "certificate": "b", "roles": ["r"]},
				{"claim": "groups", "roles": ["r"]},
				{"subject": "a", "value": "x", "roles": ["r"]},
				{"subject": "a", "roles": []},
				{"subject": "a", "roles": ["ghost"]}
			]}`,
			wantErr: []string{
				"binding 0: name exactly one", "binding 1: name exactly one", `binding 2: claim "groups" needs a value`,
				"binding 3: value without a claim", "binding 4: no roles", `binding 5: undefined role "ghost"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.policy))
			require.Error(t, err)
			for _, w := range tt.wantErr {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

func TestGrant(t *testing.T) {
	p, err := ParsePolicy([]byte(`{
		"roles": {
			"viewer": ["view"],
			"operator": ["view", "operate"],
			"submitter": ["submit"]
		},
		"bindings": [
			{"subject": "alice", "roles": ["operator"]},
			{"certificate": "batch", "roles": ["submitter"]},
			{"claim": "groups", "value": "ops", "roles": ["viewer", "operator"]},
			{"claim": "tier", "value": "gold", "roles": ["submitter"]}
		]
	}`))
	require.NoError(t, err)
	tests := []struct {
		name      string
		id        Identity
		wantRoles []string
		wantPerms []Permission
	}{
		{name: "subject", id: Identity{Subject: "alice", Method: MethodJWT}, wantRoles: []string{"operator"}, wantPerms: []Permission{PermView, PermOperate}},
		{name: "certificate", id: Identity{Subject: "batch", Method: MethodMTLS}, wantRoles: []string{"submitter"}, wantPerms: []Permission{PermSubmit}},
		{name: "token named like a certificate gets nothing", id: Identity{Subject: "batch", Method: MethodJWT}},
		{name: "certificate named like a subject gets nothing", id: Identity{Subject: "alice", Method: MethodMTLS}},
		{
			name: "array claim", id: Identity{Subject: "bob", Method: MethodJWT, Claims: map[string]any{"groups": []any{"dev", "ops"}}},
			wantRoles: []string{"viewer", "operator"}, wantPerms: []Permission{PermView, PermOperate},
		},
		{name: "string claim", id: Identity{Subject: "bob", Method: MethodJWT, Claims: map[string]any{"tier": "gold"}}, wantRoles: []string{"submitter"}, wantPerms: []Permission{PermSubmit}},
		{name: "claim of another type", id: Identity{Subject: "bob", Method: MethodJWT, Claims: map[string]any{"tier": 1.0}}},
		{name: "nobody", id: Identity{Subject: "eve", Method: MethodJWT}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Grant(tt.id)
			assert.Equal(t, tt.id.Subject, got.Subject)
			assert.Equal(t, tt.id.Method, got.Method)
			assert.Equal(t, tt.wantRoles, got.Roles)
			assert.Equal(t, tt.wantPerms, got.Permissions)
		})
	}
}

func TestDevPolicyLoads(t *testing.T) {
	p, err := LoadPolicy(newPKI(t).PolicyFile())
	require.NoError(t, err)
	admin := p.Grant(Identity{Subject: "x", Method: MethodJWT, Claims: map[string]any{"roles": []any{"admin"}}})
	assert.ElementsMatch(t, Permissions, admin.Permissions)
}
