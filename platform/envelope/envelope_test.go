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
	v9, err := proto.Marshal(&spoolv1.Envelope{Version: 9, JobId: "j", Row: 1})
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
		{name: "newer version in body", body: b64(v9), unknownVer: true},
		{name: "V1 attribute on a V2 body", body: b64(mustMarshal(t, &spoolv1.Envelope{Version: 2, JobId: "j", Row: 1, Values: []string{"a"}})), attrs: map[string]types.MessageAttributeValue{AttrVersion: {StringValue: aws.String(Version)}}},
		{name: "V2 with named fields", body: b64(mustMarshal(t, &spoolv1.Envelope{Version: 2, JobId: "j", Row: 1, Fields: []*spoolv1.Field{{Name: "a", Value: "1"}}}))},
		{name: "V1 with unnamed values", body: b64(mustMarshal(t, &spoolv1.Envelope{Version: 1, JobId: "j", Row: 1, Values: []string{"1"}}))},
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
	newer := b64(mustMarshal(t, &spoolv1.Envelope{Version: 9, JobId: "job-2", Row: 7}))
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

// A V2 envelope travels without names, without the default key and
// without an attribute, and comes back, once Expand names its values,
// as the V1 envelope it stands for.
func TestV2RoundTrip(t *testing.T) {
	columns := []string{"employee_id", "amount"}
	sent := &spoolv1.Envelope{
		Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, JobId: "job-1", Row: 42,
		Values: []string{"E42", "12.50"}, Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	body, attrs, err := Encode(sent)
	require.NoError(t, err)
	require.Empty(t, attrs, "a V2 message has no attribute")
	require.Equal(t, len(body), Size(body, attrs))

	v1 := proto.CloneOf(sent)
	v1.Version, v1.Values, v1.TransactionKey = spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, nil, "job-1:42"
	v1.Fields = []*spoolv1.Field{{Name: "employee_id", Value: "E42"}, {Name: "amount", Value: "12.50"}}
	v1Body, v1Attrs, err := Encode(v1)
	require.NoError(t, err)
	require.Less(t, Size(body, attrs), Size(v1Body, v1Attrs)*3/4, "V2 is smaller than V1")

	got, err := Decode(body, nil)
	require.NoError(t, err)
	require.Equal(t, spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, got.GetVersion(), "Decode leaves the naming to Expand")
	require.Equal(t, "job-1:42", got.GetTransactionKey(), "the default key is restored")
	require.NoError(t, Expand(got, columns))
	if d := cmp.Diff(v1, got, protocmp.Transform()); d != "" {
		t.Fatalf("expanded V2 (-want +got):\n%s", d)
	}
	require.NoError(t, Expand(got, []string{"other"}), "a V1 envelope is left as it is")
	require.Equal(t, "employee_id", got.GetFields()[0].GetName())

	job, row := Ref(body, nil)
	require.Equal(t, "job-1", job)
	require.Equal(t, int64(42), row)
}

func TestExpandRefusesAMismatch(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		columns []string
	}{
		{name: "fewer columns", values: []string{"a", "b"}, columns: []string{"x"}},
		{name: "more columns", values: []string{"a"}, columns: []string{"x", "y"}},
		{name: "a job recorded without columns", values: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &spoolv1.Envelope{Version: spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V2, JobId: "j", Row: 3, Values: tt.values}
			before := proto.CloneOf(e)
			err := Expand(e, tt.columns)
			require.ErrorContains(t, err, "row 3 of job j")
			require.True(t, proto.Equal(before, e), "a refused envelope is unchanged")
		})
	}
}

func TestEncodeRefusesAMixedShape(t *testing.T) {
	tests := []struct {
		name string
		e    *spoolv1.Envelope
		want string
	}{
		{name: "V1 with values", e: &spoolv1.Envelope{Version: 1, JobId: "j", Row: 1, Values: []string{"a"}}, want: "V1 envelope with 1 unnamed values"},
		{name: "V2 with fields", e: &spoolv1.Envelope{Version: 2, JobId: "j", Row: 1, Fields: []*spoolv1.Field{{Name: "a"}}}, want: "V2 envelope with 1 named fields"},
		{name: "no version", e: &spoolv1.Envelope{JobId: "j", Row: 1}, want: "unknown envelope version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Encode(tt.e)
			require.ErrorContains(t, err, tt.want)
		})
	}
}
