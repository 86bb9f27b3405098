package scenario

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/emulator"
)

func TestCallCounter(t *testing.T) {
	emu := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(emu.Close)
	c := newCallCounter()
	t.Cleanup(c.close)
	proxy, err := c.endpoint(emulator.DynamoDB, emu.URL)
	require.NoError(t, err)

	call := func(target string) {
		req, err := http.NewRequest(http.MethodPost, proxy, nil)
		require.NoError(t, err)
		if target != "" {
			req.Header.Set("X-Amz-Target", target)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusTeapot, resp.StatusCode, "the emulator's answer passes through")
	}
	call("DynamoDB_20120810.PutItem")
	before := c.snapshot()
	call("DynamoDB_20120810.PutItem")
	call("DynamoDB_20120810.UpdateItem")
	call("AmazonSQS.ReceiveMessage")
	call("")
	require.Equal(t, map[string]int64{
		"DynamoDB PutItem": 1, "DynamoDB UpdateItem": 1, "SQS ReceiveMessage": 1, "other": 1,
	}, c.since(before))
}
