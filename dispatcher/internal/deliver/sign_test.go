package deliver_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/deliver/delivertest"
)

// The Standard Webhooks test vector, as its reference libraries test it.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignerVector(t *testing.T) {
	other := "whsec_" + "c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=" // "second-secret-for-rotation"
	tests := []struct {
		name    string
		secrets []string
		want    string
	}{
		{name: "with prefix", secrets: []string{vectorSecret}, want: vectorSignature},
		{name: "without prefix", secrets: []string{strings.TrimPrefix(vectorSecret, "whsec_")}, want: vectorSignature},
		{name: "two secrets sign in order", secrets: []string{vectorSecret, other}, want: vectorSignature + " v1,"},
		{name: "the new secret first", secrets: []string{other, vectorSecret}, want: " " + vectorSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := deliver.NewSigner(tt.secrets...)
			require.NoError(t, err)
			got := s.Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody))
			require.Contains(t, got, tt.want)
			require.Len(t, strings.Fields(got), len(tt.secrets))
		})
	}
}

func TestNewSignerRefusesWithoutEchoing(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		want    string
	}{
		{name: "none", want: "signing secrets: want 1 to 2, got 0"},
		{name: "three", secrets: []string{vectorSecret, vectorSecret, vectorSecret}, want: "signing secrets: want 1 to 2, got 3"},
		{name: "not base64", secrets: []string{vectorSecret, "whsec_top-secret!value"}, want: "signing secret 2: want whsec_ followed by base64"},
		{name: "empty key", secrets: []string{"whsec_"}, want: "signing secret 1: empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := deliver.NewSigner(tt.secrets...)
			require.EqualError(t, err, tt.want)
			require.NotContains(t, err.Error(), "top-secret")
		})
	}
}

// A signed request carries the transaction key as its webhook id and a
// signature over exactly the body sent, at the timestamp sent.
func TestSendSigns(t *testing.T) {
	dest := delivertest.New(t, nil)
	signer, err := deliver.NewSigner(vectorSecret)
	require.NoError(t, err)
	c := deliver.New(deliver.Options{URL: dest.URL, Timeout: 5 * time.Second, Signer: signer,
		Now: func() time.Time { return time.Unix(vectorTimestamp, 0) }})
	e := envelope(4, "amount", "10")
	_, err = c.Send(t.Context(), e)
	require.NoError(t, err)

	got := dest.Only()
	require.Equal(t, e.GetTransactionKey(), got.Header.Get("webhook-id"))
	require.Equal(t, "1614265330", got.Header.Get("webhook-timestamp"))
	require.Equal(t, signer.Sign(e.GetTransactionKey(), time.Unix(vectorTimestamp, 0), []byte(got.Body)), got.Header.Get("webhook-signature"))
	require.Equal(t, string(deliver.Body(e)), got.Body)
}
