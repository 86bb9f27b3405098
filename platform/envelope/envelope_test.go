package envelope

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func TestRoundTrip(t *testing.T) {
	in := &spoolv1.Envelope{
		Version:        spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1,
		JobId:          "job-1",
		Row:            42,
		Fields:         []*spoolv1.Field{{Name: "employee_id", Value: "E42"}, {Name: "amount", Value: "12.50"}},
		TransactionKey: "job-1:42",
	}
	body, attrs, err := Encode(in)
	require.NoError(t, err)
	require.Equal(t, map[string]string{AttrVersion: Version}, attrValues(attrs), "the version is the only attribute")
	require.Greater(t, Size(body, attrs), len(body))
	out, err := Decode(body, attrs)
	require.NoError(t, err)
	if d := cmp.Diff(in, out, protocmp.Transform()); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
}

func TestDecodeRejects(t *testing.T) {
	v2, err := proto.Marshal(&spoolv1.Envelope{Version: 2, JobId: "j", Row: 1})
	require.NoError(t, err)
	good, _, err := Encode(&spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "j", Row: 1})
	require.NoError(t, err)
	tests := []struct {
		name       string
		body       string
		attrs      map[string]types.MessageAttributeValue
		unknownVer bool
	}{
		{name: "not base64", body: "{not base64}"},
		{name: "not a proto", body: "AAAA"},
		{name: "newer version in body", body: b64(v2), unknownVer: true},
		{name: "newer version in attribute", body: good, attrs: map[string]types.MessageAttributeValue{AttrVersion: {StringValue: aws.String("v9")}}, unknownVer: true},
		{name: "missing row", body: b64(mustMarshal(t, &spoolv1.Envelope{Version: 1, JobId: "j"}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.body, tt.attrs)
			require.Error(t, err)
			require.Equal(t, tt.unknownVer, errors.Is(err, ErrUnknownVersion))
		})
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

func attrValues(attrs map[string]types.MessageAttributeValue) map[string]string {
	out := map[string]string{}
	for k, v := range attrs {
		out[k] = aws.ToString(v.StringValue)
	}
	return out
}

func TestRef(t *testing.T) {
	body, attrs, err := Encode(&spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job-1", Row: 42})
	require.NoError(t, err)
	newer := b64(mustMarshal(t, &spoolv1.Envelope{Version: 2, JobId: "job-2", Row: 7}))
	legacy := map[string]types.MessageAttributeValue{
		AttrVersion: {DataType: aws.String("String"), StringValue: aws.String(Version)},
		AttrJobID:   {DataType: aws.String("String"), StringValue: aws.String("job-3")},
		AttrRow:     {DataType: aws.String("Number"), StringValue: aws.String("9")},
	}
	tests := []struct {
		name  string
		body  string
		attrs map[string]types.MessageAttributeValue
		job   string
		row   int64
	}{
		{name: "from the body", body: body, attrs: attrs, job: "job-1", row: 42},
		{name: "a newer version still names its job", body: newer, job: "job-2", row: 7},
		{name: "an older ingestor's attributes when the body says nothing", body: "{not base64}", attrs: legacy, job: "job-3", row: 9},
		{name: "the body wins over the attributes", body: body, attrs: legacy, job: "job-1", row: 42},
		{name: "neither", body: "AAAA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, row := Ref(tt.body, tt.attrs)
			require.Equal(t, tt.job, job)
			require.Equal(t, tt.row, row)
		})
	}
}

// An envelope without a transaction key (the contract allows one) decodes
// with the key the ingestor would derive, so the ledger and the
// destination's idempotency header both see it, never an empty key.
func TestDecodeDefaultsTheKey(t *testing.T) {
	body, attrs, err := Encode(&spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, JobId: "job-1", Row: 42})
	require.NoError(t, err)
	e, err := Decode(body, attrs)
	require.NoError(t, err)
	require.Equal(t, "job-1:42", e.GetTransactionKey())
	require.Equal(t, TransactionKey("job-1", 42, nil), e.GetTransactionKey())
}
