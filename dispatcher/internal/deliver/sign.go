package deliver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers: the message id a receiver deduplicates on, the
// signing time it bounds replays with, and the signatures.
const (
	HeaderWebhookID        = "Webhook-Id"
	HeaderWebhookTimestamp = "Webhook-Timestamp"
	HeaderWebhookSignature = "Webhook-Signature"
)

// secretPrefix marks a Standard Webhooks secret: the key, base64 encoded,
// follows it.
const secretPrefix = "whsec_"

// MaxSigningSecrets bounds how many secrets sign at once: the current one
// and, during a rotation, the next (or the previous) one. Each adds a
// signature every receiver checks.
const MaxSigningSecrets = 2

// Signer signs requests in the Standard Webhooks form: an HMAC-SHA256 over
// "id.timestamp.body" with each secret, sent as "v1,<base64>" signatures
// separated by spaces. Signing with two secrets at once lets the receiver
// rotate without a window where it refuses either side's requests.
type Signer struct {
	keys [][]byte
}

// NewSigner parses secrets of the form "whsec_<base64>" (the prefix may be
// left out, as Standard Webhooks libraries allow). Its errors say which
// secret is malformed by position, never by value.
func NewSigner(secrets ...string) (*Signer, error) {
	if len(secrets) == 0 || len(secrets) > MaxSigningSecrets {
		return nil, fmt.Errorf("signing secrets: want 1 to %d, got %d", MaxSigningSecrets, len(secrets))
	}
	s := &Signer{}
	for i, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, secretPrefix))
		if err != nil {
			// The decoding error names the offending byte's offset only.
			return nil, fmt.Errorf("signing secret %d: want %s followed by base64", i+1, secretPrefix)
		}
		if len(key) == 0 {
			return nil, fmt.Errorf("signing secret %d: empty key", i+1)
		}
		s.keys = append(s.keys, key)
	}
	return s, nil
}

// Sign returns the webhook-signature value for id, the signing time and
// the body.
func (s *Signer) Sign(id string, at time.Time, body []byte) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	sigs := make([]string, 0, len(s.keys))
	for _, key := range s.keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}
