package awsconf

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"
)

// TestCallLog makes calls of both services through Load's configuration
// and checks the log names each distinct call once, with its resource.
func TestCallLog(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	log := filepath.Join(dir, "calls.jsonl")
	missing := filepath.Join(dir, "none")
	for k, v := range map[string]string{
		CallLogEnv: log, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
		"AWS_ENDPOINT_URL_SQS": srv.URL, "AWS_ENDPOINT_URL_DYNAMODB": srv.URL, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": missing, "AWS_SHARED_CREDENTIALS_FILE": missing,
	} {
		t.Setenv(k, v)
	}
	ctx := context.Background()
	cfg, err := Load(ctx, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	db, q := dynamodb.NewFromConfig(cfg), sqs.NewFromConfig(cfg)

	key := map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "a"}}
	for range 2 {
		_, err = db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("jobs"), Key: key})
		require.NoError(t, err)
	}
	_, err = db.Query(ctx, &dynamodb.QueryInput{TableName: aws.String("jobs"), IndexName: aws.String("by-job")})
	require.NoError(t, err)
	_, err = q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String("http://q.local/1/spool-dlq"), MessageBody: aws.String("x")})
	require.NoError(t, err)
	_, err = q.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("spool-dlq")})
	require.NoError(t, err)

	calls, err := ReadCallLog(log)
	require.NoError(t, err)
	prog := filepath.Base(os.Args[0])
	require.Equal(t, []Call{
		{Program: prog, Service: "DynamoDB", Operation: "GetItem", Table: "jobs"},
		{Program: prog, Service: "DynamoDB", Operation: "Query", Table: "jobs", Index: "by-job"},
		{Program: prog, Service: "SQS", Operation: "SendMessage", Queue: "http://q.local/1/spool-dlq"},
		{Program: prog, Service: "SQS", Operation: "GetQueueUrl", Queue: "spool-dlq"},
	}, calls)
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Len(t, strings.Split(strings.TrimSpace(string(b)), "\n"), 4, "a repeated call is written once")
}

// TestNoCallLog: without the variable the recorder is not added to the
// clients; with it, it is, and nothing else changes.
func TestNoCallLog(t *testing.T) {
	t.Setenv("AWS_REGION", "us-east-1")
	load := func(env string) int {
		t.Setenv(CallLogEnv, env)
		cfg, err := Load(context.Background(), slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		return len(cfg.APIOptions)
	}
	without := load("")
	require.Equal(t, without+1, load(filepath.Join(t.TempDir(), "calls.jsonl")))
}
