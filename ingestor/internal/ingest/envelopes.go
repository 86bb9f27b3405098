package ingest

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// envelopes is the one envelope a stream fills for each of its rows in
// turn. Publish encodes an envelope before it returns and keeps only the
// encoding (the Publisher contract), so a stream needs one, not one a row:
// the envelope, its fields and its timestamp were eight of the forty heap
// allocations a row cost (BenchmarkRowPath).
type envelopes struct {
	e      spoolv1.Envelope
	fields []spoolv1.Field
	at     timestamppb.Timestamp
}

func newEnvelopes(cols []string) *envelopes {
	v := &envelopes{fields: make([]spoolv1.Field, len(cols))}
	v.e.Fields = make([]*spoolv1.Field, len(cols))
	for i, c := range cols {
		v.fields[i].Name = c
		v.e.Fields[i] = &v.fields[i]
	}
	return v
}

// next returns the envelope with values as its fields' values and every
// other field cleared, for the caller to fill.
func (v *envelopes) next(values []string) *spoolv1.Envelope {
	fields := v.e.Fields
	v.e.Reset()
	for i, f := range fields {
		f.Value = values[i]
	}
	v.at.Reset()
	v.e.Version, v.e.Fields, v.e.PublishedAt = spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1, fields, &v.at
	return &v.e
}
