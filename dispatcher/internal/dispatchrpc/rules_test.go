package dispatchrpc

import (
	"testing"

	"github.com/stretchr/testify/assert"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// TestEveryMethodHasARule: a method without a rule is refused to everyone,
// so a new RPC must be given one deliberately.
func TestEveryMethodHasARule(t *testing.T) {
	assert.NoError(t, Rules.Cover(&spoolv1.DispatchService_ServiceDesc))
}
