package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	env := map[string]string{"SPOOL_TLS_CERT": "-----BEGIN CERTIFICATE-----\n...", "SPOOL_TLS_KEY": "secret key", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name    string
		args    []string
		want    map[string]string // file → content
		wantErr []string
	}{
		{
			name: "two files",
			args: []string{"server.pem=SPOOL_TLS_CERT", "server-key.pem=SPOOL_TLS_KEY"},
			want: map[string]string{"server.pem": env["SPOOL_TLS_CERT"], "server-key.pem": "secret key"},
		},
		{name: "nothing named", args: nil, wantErr: []string{"at least one"}},
		{
			name:    "missing and empty variables, all reported, nothing written",
			args:    []string{"server.pem=SPOOL_TLS_CERT", "a=NOPE", "b=EMPTY"},
			wantErr: []string{"NOPE is not set or empty (for a)", "EMPTY is not set or empty (for b)"},
		},
		{name: "not FILE=VARIABLE", args: []string{"server.pem"}, wantErr: []string{"want FILE=VARIABLE"}},
		{name: "a path outside the folder", args: []string{"../etc/x=SPOOL_TLS_KEY"}, wantErr: []string{"plain name inside -dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := run(append([]string{"-dir", dir}, tt.args...), lookup, io.Discard, io.Discard)
			if len(tt.wantErr) > 0 {
				require.Error(t, err)
				for _, w := range tt.wantErr {
					require.ErrorContains(t, err, w)
				}
				require.NotContains(t, err.Error(), "secret key", "an error never shows a value")
				entries, rerr := os.ReadDir(dir)
				require.NoError(t, rerr)
				require.Empty(t, entries, "nothing is written when a variable is missing")
				return
			}
			require.NoError(t, err)
			for file, content := range tt.want {
				path := filepath.Join(dir, file)
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				require.Equal(t, content, string(b))
				st, err := os.Stat(path)
				require.NoError(t, err)
				require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
			}
		})
	}
}

func TestRunReplacesReadableFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	var out strings.Builder
	lookup := func(k string) (string, bool) { return "new", k == "K" }
	require.NoError(t, run([]string{"-dir", dir, "key.pem=K"}, lookup, &out, io.Discard))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	require.Equal(t, "wrote "+path+" from K\n", out.String())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "new", string(b))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left beside it")
}
