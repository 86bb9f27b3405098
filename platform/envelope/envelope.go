// Package envelope encodes and decodes the SQS message that carries one
// transaction from the ingestor to the dispatchers.
//
// The schema is spool.v1.Envelope (proto/spool/v1/envelope.proto). The body
// is the base64 of its binary encoding, because SQS bodies must be text and
// protobuf binary is the compact, versionable form. Message attributes repeat
// the version, job id and row so that an operator (or a redrive tool) can
// read them without decoding the body.
package envelope

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Message attribute names.
const (
	AttrVersion = "spool-envelope"
	AttrJobID   = "spool-job-id"
	AttrRow     = "spool-row"
)

// Version is the envelope version this code writes and reads.
const Version = "v1"

// ErrUnknownVersion marks a message written by a newer (or foreign)
// producer; it must be dead-lettered, never retried forever.
var ErrUnknownVersion = errors.New("unknown envelope version")

// Encode returns the SQS body and attributes for e.
func Encode(e *spoolv1.Envelope) (string, map[string]types.MessageAttributeValue, error) {
	b, err := proto.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("marshal envelope: %w", err)
	}
	attrs := map[string]types.MessageAttributeValue{
		AttrVersion: {DataType: aws.String("String"), StringValue: aws.String(Version)},
		AttrJobID:   {DataType: aws.String("String"), StringValue: aws.String(e.GetJobId())},
		AttrRow:     {DataType: aws.String("Number"), StringValue: aws.String(strconv.FormatInt(e.GetRow(), 10))},
	}
	return base64.StdEncoding.EncodeToString(b), attrs, nil
}

// Size returns the bytes a message counts against the queue's maximum
// message size: the body plus, per attribute, its name, type and value.
func Size(body string, attrs map[string]types.MessageAttributeValue) int {
	n := len(body)
	for k, v := range attrs {
		n += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
	}
	return n
}

// Decode parses a message body. attrs may be nil; when the version
// attribute is present it is checked before the body is touched.
func Decode(body string, attrs map[string]types.MessageAttributeValue) (*spoolv1.Envelope, error) {
	if v, ok := attrs[AttrVersion]; ok && aws.ToString(v.StringValue) != Version {
		return nil, fmt.Errorf("%w: attribute %s=%q", ErrUnknownVersion, AttrVersion, aws.ToString(v.StringValue))
	}
	b, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("decode envelope body: %w", err)
	}
	var e spoolv1.Envelope
	if err := proto.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("unmarshal envelope: %w", err)
	}
	if e.GetVersion() != spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1 {
		return nil, fmt.Errorf("%w: %v", ErrUnknownVersion, e.GetVersion())
	}
	if e.GetJobId() == "" || e.GetRow() <= 0 {
		return nil, fmt.Errorf("decode envelope: missing job id or row")
	}
	return &e, nil
}
