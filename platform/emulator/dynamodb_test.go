package emulator

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestChosenDynamoDB(t *testing.T) {
	tests := []struct {
		name, env string
		want      DynamoDBImpl
		wantErr   string
	}{
		{name: "unset is dynalite", env: "", want: Dynalite},
		{name: "dynalite", env: "dynalite", want: Dynalite},
		{name: "dynamodb local", env: "dynamodb-local", want: DynamoDBLocal},
		{name: "anything else is an error", env: "localstack", wantErr: `SPOOL_DYNAMODB_EMULATOR="localstack": want "dynalite" or "dynamodb-local"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(DynamoDBEnv, tt.env)
			got, err := ChosenDynamoDB()
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				_, err = Command(DynamoDB, t.TempDir(), 8000)
				require.EqualError(t, err, tt.wantErr, "Command refuses it too")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// TestDynamoDBLocalCommand checks the command line and the two ways it can
// be missing: the jar (no make deps) and Java.
func TestDynamoDBLocalCommand(t *testing.T) {
	t.Setenv(DynamoDBEnv, string(DynamoDBLocal))
	local := t.TempDir()
	_, err := Command(DynamoDB, local, 8000)
	require.ErrorContains(t, err, "run `make deps`")

	jarDir := filepath.Join(local, dynamoDBLocalDir)
	require.NoError(t, os.MkdirAll(jarDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(jarDir, "DynamoDBLocal.jar"), nil, 0o644))

	// A PATH with a stand-in java, then one without any.
	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "java"), []byte("#!/bin/sh\n"), 0o755))
	t.Setenv("PATH", bin)
	cmd, err := Command(DynamoDB, local, 8123)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(bin, "java"), cmd.Path)
	require.Equal(t, jarDir, cmd.Dir)
	require.Subset(t, cmd.Args, []string{"-jar", "DynamoDBLocal.jar", "-inMemory", "-port", "8123", "-disableTelemetry", "-sharedDb"})
	perKey, err := DynamoDBLocalCommand(local, 8123, false)
	require.NoError(t, err)
	require.Equal(t, cmd.Args[:len(cmd.Args)-1], perKey.Args, "the same, without -sharedDb")

	t.Setenv("PATH", t.TempDir())
	_, err = Command(DynamoDB, local, 8000)
	require.ErrorContains(t, err, "SPOOL_DYNAMODB_EMULATOR=dynamodb-local needs a Java runtime (8 or later) on PATH")
	require.ErrorContains(t, err, "unset SPOOL_DYNAMODB_EMULATOR to use dynalite")
}
