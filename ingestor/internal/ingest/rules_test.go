package ingest

import (
	"testing"

	"github.com/stretchr/testify/assert"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// TestEveryMethodHasARule: a method without a rule is refused to everyone,
// so a new RPC must be given one deliberately.
func TestEveryMethodHasARule(t *testing.T) {
	desc := spoolv1.IngestService_ServiceDesc
	names := []string{}
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range desc.Streams {
		names = append(names, s.StreamName)
	}
	for _, n := range names {
		assert.NotEmpty(t, Rules["/"+desc.ServiceName+"/"+n], "no rule for %s", n)
	}
	assert.Len(t, Rules, len(names), "a rule for a method the service does not have")
}
