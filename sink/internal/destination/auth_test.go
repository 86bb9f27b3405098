package destination

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The Standard Webhooks test vector.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	otherSecret     = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="
)

func TestVerifyVector(t *testing.T) {
	keys, err := parseSecrets([]string{vectorSecret})
	require.NoError(t, err)
	other, err := parseSecrets([]string{otherSecret})
	require.NoError(t, err)
	at := time.Unix(vectorTimestamp, 0)
	header := func(sig, ts string) http.Header {
		return http.Header{"Webhook-Id": {vectorID}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {sig}}
	}
	ts := strconv.Itoa(vectorTimestamp)
	tests := []struct {
		name    string
		keys    [][]byte
		h       http.Header
		body    string
		now     time.Time
		wantErr string
	}{
		{name: "the vector", keys: keys, h: header(vectorSignature, ts), body: vectorBody, now: at},
		{name: "one of two signatures", keys: keys, h: header("v1,bm9wZQ== "+vectorSignature, ts), body: vectorBody, now: at},
		{name: "one of two keys", keys: append(other, keys...), h: header(vectorSignature, ts), body: vectorBody, now: at},
		{name: "another key", keys: other, h: header(vectorSignature, ts), body: vectorBody, now: at, wantErr: "no valid signature"},
		{name: "body changed", keys: keys, h: header(vectorSignature, ts), body: `{"test": 2432232315}`, now: at, wantErr: "no valid signature"},
		{name: "too old", keys: keys, h: header(vectorSignature, ts), body: vectorBody, now: at.Add(6 * time.Minute), wantErr: "too far"},
		{name: "unsigned", keys: keys, h: http.Header{}, body: vectorBody, now: at, wantErr: "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.keys, tt.h, []byte(tt.body), tt.now)
			if tt.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tt.wantErr)
			}
		})
	}
}

// sign signs body as the dispatcher does, with the secret's key.
func sign(t *testing.T, secret, id string, at time.Time, body string) http.Header {
	t.Helper()
	keys, err := parseSecrets([]string{secret})
	require.NoError(t, err)
	return http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {strconv.FormatInt(at.Unix(), 10)},
		"Webhook-Signature": {vectorSigOf(keys[0], id, at, body)}}
}

func TestSignaturesRotateAtRuntime(t *testing.T) {
	srv, l := newSink(t, WithSignatures([]string{vectorSecret}))
	now := time.Now()
	require.Equal(t, http.StatusOK, post(t, srv, "/", tx("a", 1), sign(t, vectorSecret, "a:1", now, tx("a", 1))).code)
	require.Equal(t, http.StatusUnauthorized, post(t, srv, "/", tx("a", 2), sign(t, otherSecret, "a:2", now, tx("a", 2))).code)
	require.Equal(t, http.StatusUnauthorized, post(t, srv, "/", tx("a", 2), nil).code)

	got := post(t, srv, "/admin/signing-secrets", `{"secrets":["`+otherSecret+`"]}`, nil)
	require.Equal(t, http.StatusOK, got.code)
	require.Equal(t, http.StatusUnauthorized, post(t, srv, "/", tx("a", 3), sign(t, vectorSecret, "a:3", now, tx("a", 3))).code)
	require.Equal(t, http.StatusOK, post(t, srv, "/", tx("a", 4), sign(t, otherSecret, "a:4", now, tx("a", 4))).code)

	require.Equal(t, http.StatusBadRequest, post(t, srv, "/admin/signing-secrets", `{"secrets":["whsec_*"]}`, nil).code)
	require.EqualValues(t, 2, l.Stats().Distinct, "refused requests are never applied")
	s := srv.Config.Handler.(*Server).authStats()
	require.Equal(t, AuthStats{BadSignature: 3, Signed: 2}, s)
}

func TestOAuth2TokensExpire(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	srv, l := newSink(t, WithClock(clock), WithOAuth2("spool", "s3cret", 2*time.Second, time.Minute))

	token := func(id, secret string) (int, string, float64) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/oauth2/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		tok, _ := body["access_token"].(string)
		exp, _ := body["expires_in"].(float64)
		return resp.StatusCode, tok, exp
	}
	code, _, _ := token("spool", "wrong")
	require.Equal(t, http.StatusUnauthorized, code)
	code, tok, expiresIn := token("spool", "s3cret")
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 60, expiresIn, "the advertised lifetime")

	bearer := http.Header{"Authorization": {"Bearer " + tok}}
	require.Equal(t, http.StatusUnauthorized, post(t, srv, "/", tx("a", 1), nil).code)
	require.Equal(t, http.StatusUnauthorized, post(t, srv, "/", tx("a", 1), http.Header{"Authorization": {"Bearer forged"}}).code)
	require.Equal(t, http.StatusOK, post(t, srv, "/", tx("a", 1), bearer).code)
	now.Add(int64(2 * time.Second))
	require.Equal(t, http.StatusUnauthorized, post(t, srv, "/", tx("a", 2), bearer).code, "expired after its real lifetime")
	require.EqualValues(t, 1, l.Stats().Distinct)
	require.Equal(t, AuthStats{Unauthorized: 3, TokensIssued: 1}, srv.Config.Handler.(*Server).authStats())
}

func TestClientCertRequired(t *testing.T) {
	srv, l := newSink(t, WithClientCert())
	got := post(t, srv, "/", tx("a", 1), nil)
	require.Equal(t, http.StatusForbidden, got.code)
	require.Zero(t, l.Stats().Requests)
	require.Equal(t, http.StatusOK, post(t, srv, "/reset", "", nil).code, "administration needs no certificate")
}

func vectorSigOf(key []byte, id string, at time.Time, body string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(at.Unix(), 10) + "." + body))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
