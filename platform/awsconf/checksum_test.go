package awsconf

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/require"
)

// answer is what the fake DynamoDB endpoint sends back.
type answer struct {
	status int
	body   string
	// crc32 is the X-Amz-Crc32 header: "right", "" (none) or a literal.
	crc32 string
}

func fakeDynamoDB(t *testing.T, a answer) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch a.crc32 {
		case "":
		case "right":
			w.Header().Set(crc32Header, strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(a.body))), 10))
		default:
			w.Header().Set(crc32Header, a.crc32)
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

const conditionFailed = `{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}`

// TestCRC32WhenPresent sends a conditional PutItem to a fake endpoint and
// checks what the client returns and what it logs, through Load's logger.
func TestCRC32WhenPresent(t *testing.T) {
	tests := []struct {
		name string
		answer
		// sdkCheck keeps the SDK's own check instead of CRC32WhenPresent.
		sdkCheck      bool
		wantErr       string
		wantCondition bool
		wantWarning   bool
	}{
		{name: "success with the right checksum", answer: answer{status: 200, body: "{}", crc32: "right"}},
		{name: "success without a checksum", answer: answer{status: 200, body: "{}"}},
		{name: "success with a wrong checksum", answer: answer{status: 200, body: "{}", crc32: "12345"}, wantWarning: true},
		{name: "failed condition with the right checksum", answer: answer{status: 400, body: conditionFailed, crc32: "right"}, wantCondition: true},
		{name: "failed condition without a checksum", answer: answer{status: 400, body: conditionFailed}, wantCondition: true},
		{name: "failed condition with a wrong checksum", answer: answer{status: 400, body: conditionFailed, crc32: "12345"},
			wantCondition: true, wantWarning: true},
		{name: "unreadable checksum", answer: answer{status: 200, body: "{}", crc32: "abc"}, wantErr: `parse X-Amz-Crc32 header "abc"`},
		// The reason CRC32WhenPresent exists: when this case fails, the
		// SDK has stopped checking absent checksums, and the option can go.
		{name: "the SDK's own check warns without a checksum", answer: answer{status: 400, body: conditionFailed},
			sdkCheck: true, wantCondition: true, wantWarning: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := aws.Config{
				Region:       "us-east-1",
				Credentials:  credentials.NewStaticCredentialsProvider("local", "local", ""),
				BaseEndpoint: aws.String(fakeDynamoDB(t, tt.answer)),
				Logger:       sdkLogger{log: slog.New(slog.NewJSONHandler(&logs, nil))},
			}
			if !tt.sdkCheck {
				cfg.APIOptions = []func(*middleware.Stack) error{CRC32WhenPresent}
			}
			db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
			_, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{
				TableName:           aws.String("spool"),
				Item:                map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "a"}},
				ConditionExpression: aws.String("attribute_not_exists(pk)"),
			})
			switch {
			case tt.wantErr != "":
				require.ErrorContains(t, err, tt.wantErr)
			case tt.wantCondition:
				var ccf *ddbtypes.ConditionalCheckFailedException
				require.True(t, errors.As(err, &ccf), "want a failed condition, got %v", err)
			default:
				require.NoError(t, err)
			}
			if tt.wantWarning {
				require.Contains(t, logs.String(), `"level":"WARN","msg":"aws sdk"`)
				require.Contains(t, logs.String(), "response did not match expected checksum")
			} else {
				require.Empty(t, logs.String())
			}
		})
	}
}

// TestCRC32WhenPresentLeavesOtherServices checks that a stack without the
// DynamoDB check (SQS's) is left as it was.
func TestCRC32WhenPresentLeavesOtherServices(t *testing.T) {
	stack := middleware.NewStack("SendMessage", smithyhttp.NewStackRequest)
	require.NoError(t, CRC32WhenPresent(stack))
	require.Empty(t, stack.Deserialize.List())
}
