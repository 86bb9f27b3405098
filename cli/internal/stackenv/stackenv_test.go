package stackenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		file    *string // nil: no file
		env     map[string]string
		want    map[string]string
		wantErr string
	}{
		{name: "no file", env: map[string]string{"A": "1"}, want: map[string]string{"A": "1"}},
		{
			name: "fills unset variables only",
			file: ptr("# written by spool-stack\nSPOOL_INGESTOR_ADDR=127.0.0.1:4000\n\nSPOOL_TABLE=from-file\nAWS_REGION=us-east-1\n"),
			env:  map[string]string{"SPOOL_TABLE": "from-env"},
			want: map[string]string{"SPOOL_INGESTOR_ADDR": "127.0.0.1:4000", "SPOOL_TABLE": "from-env", "AWS_REGION": "us-east-1"},
		},
		{
			name: "set but empty still wins",
			file: ptr("SPOOL_TABLE=from-file\n"),
			env:  map[string]string{"SPOOL_TABLE": ""},
			want: map[string]string{"SPOOL_TABLE": ""},
		},
		{
			name: "export prefix, quotes and equals in values",
			file: ptr("export A=\"x y\"\nB='z'\nC=u=v\n"),
			want: map[string]string{"A": "x y", "B": "z", "C": "u=v"},
		},
		{name: "line without equals", file: ptr("A=1\nnonsense\n"), wantErr: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "stack.env")
			if tt.file != nil {
				require.NoError(t, os.WriteFile(path, []byte(*tt.file), 0o600))
			}
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			set := func(k, v string) error { env[k] = v; return nil }
			err := Load(path, lookup, set)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, env)
		})
	}
}

func ptr(s string) *string { return &s }
