package jobstore_test

import (
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

// cmpDiff compares protos.
func cmpDiff(want, got any, opts ...cmp.Option) string {
	return cmp.Diff(want, got, append(opts, protocmp.Transform())...)
}
