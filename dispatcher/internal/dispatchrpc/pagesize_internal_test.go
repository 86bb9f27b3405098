package dispatchrpc

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPageSize(t *testing.T) {
	for _, tc := range []struct {
		name     string
		asked    int32
		want     int
		wantCode codes.Code
	}{
		{name: "zero asks for the default", asked: 0, want: 50},
		{name: "within the bound", asked: 7, want: 7},
		{name: "at the bound", asked: 500, want: 500},
		{name: "over the bound is capped", asked: 501, want: 500},
		{name: "negative is refused", asked: -1, wantCode: codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pageSize("page_size", tc.asked, 50, 500)
			if tc.wantCode != codes.OK {
				require.Equal(t, tc.wantCode, status.Code(err), "%v", err)
				require.ErrorContains(t, err, "page_size -1: want 0 or more")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
