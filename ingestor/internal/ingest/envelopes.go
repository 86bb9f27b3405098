package ingest

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// envelopes is the one envelope a stream fills for each of its rows in
// turn. Publish encodes an envelope before it returns and keeps only the
// encoding (the Publisher contract), so a stream needs one, not one a row:
// the envelope, its fields and its timestamp were eight of the forty heap
// allocations a row cost (BenchmarkRowPath). A V2 envelope takes the row's
// values as they are and needs no fields at all.
type envelopes struct {
	version spoolv1.EnvelopeVersion
	e       spoolv1.Envelope
	fields  []spoolv1.Field
	named   []*spoolv1.Field
	at      timestamppb.Timestamp
}

// newEnvelopes returns the envelopes of a job with columns cols, in
// version (V1 or V2).
func newEnvelopes(cols []string, version spoolv1.EnvelopeVersion) *envelopes {
	v := &envelopes{version: version}
	if v.version != spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1 {
		return v
	}
	v.fields, v.named = make([]spoolv1.Field, len(cols)), make([]*spoolv1.Field, len(cols))
	for i, c := range cols {
		v.fields[i].Name = c
		v.named[i] = &v.fields[i]
	}
	return v
}

// next returns the envelope holding values, in the stream's version, with
// every other field cleared for the caller to fill.
func (v *envelopes) next(values []string) *spoolv1.Envelope {
	v.e.Reset()
	v.at.Reset()
	v.e.Version, v.e.PublishedAt = v.version, &v.at
	if v.version != spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1 {
		v.e.Values = values
		return &v.e
	}
	for i, f := range v.named {
		f.Value = values[i]
	}
	v.e.Fields = v.named
	return &v.e
}

// key sets the row's transaction key on e, which V2 leaves out when it is
// the default one (job and row): every reader derives that one itself.
func (v *envelopes) key(e *spoolv1.Envelope, key string, businessKey bool) {
	if businessKey || v.version == spoolv1.EnvelopeVersion_ENVELOPE_VERSION_V1 {
		e.TransactionKey = key
	}
}
