package auth

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc"
)

func TestRulesCover(t *testing.T) {
	desc := &grpc.ServiceDesc{
		ServiceName: "spool.v1.TestService",
		Methods:     []grpc.MethodDesc{{MethodName: "Get"}},
		Streams:     []grpc.StreamDesc{{StreamName: "Watch"}},
	}
	for _, tc := range []struct {
		name  string
		rules Rules
		want  []string
	}{
		{
			name:  "every method ruled",
			rules: Rules{"/spool.v1.TestService/Get": {"jobs:read"}, "/spool.v1.TestService/Watch": {"jobs:read"}},
		},
		{
			name:  "a stream without a rule",
			rules: Rules{"/spool.v1.TestService/Get": {"jobs:read"}},
			want:  []string{"no rule for /spool.v1.TestService/Watch"},
		},
		{
			name:  "a rule with no permission",
			rules: Rules{"/spool.v1.TestService/Get": {}, "/spool.v1.TestService/Watch": {"jobs:read"}},
			want:  []string{"no rule for /spool.v1.TestService/Get"},
		},
		{
			name: "a rule for a method the service does not have",
			rules: Rules{
				"/spool.v1.TestService/Get": {"jobs:read"}, "/spool.v1.TestService/Watch": {"jobs:read"},
				"/spool.v1.TestService/Gone": {"jobs:read"},
			},
			want: []string{"a rule for /spool.v1.TestService/Gone"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rules.Cover(desc)
			if len(tc.want) == 0 {
				assert.NoError(t, err)
				return
			}
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}
