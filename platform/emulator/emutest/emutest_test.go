package emutest

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator"
	"github.com/spoolhq/spool/platform/provision"
)

// TestStartIsFresh checks what every DynamoDB test relies on, on the
// emulator of the run: each Start is an empty DynamoDB of its own, and all
// clients of one Start see the same tables, whatever their credentials.
func TestStartIsFresh(t *testing.T) {
	ctx := context.Background()
	a, b := Start(t, emulator.DynamoDB), Start(t, emulator.DynamoDB)
	dbA := dynamodb.NewFromConfig(Config(a))
	require.NoError(t, provision.EnsureTable(ctx, dbA, "spool"))

	other := Config(a)
	other.Credentials = credentials.NewStaticCredentialsProvider("someoneelse", "secret", "")
	tables, err := dynamodb.NewFromConfig(other).ListTables(ctx, &dynamodb.ListTablesInput{})
	require.NoError(t, err)
	require.Equal(t, []string{"spool"}, tables.TableNames, "same Start, other credentials")

	tables, err = dynamodb.NewFromConfig(Config(b)).ListTables(ctx, &dynamodb.ListTablesInput{})
	require.NoError(t, err)
	require.Empty(t, tables.TableNames, "another Start")
	_, err = dynamodb.NewFromConfig(Config(b)).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("spool")})
	require.Error(t, err)
}

func TestWithAccessKey(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "sigv4",
			in:   "AWS4-HMAC-SHA256 Credential=local/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=ab",
			want: "AWS4-HMAC-SHA256 Credential=spool7/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=ab"},
		{name: "none", in: "", want: ""},
		{name: "no scope", in: "AWS4-HMAC-SHA256 Credential=local", want: "AWS4-HMAC-SHA256 Credential=local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, withAccessKey(tt.in, "spool7"))
		})
	}
}
