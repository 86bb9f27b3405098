package destination

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Authentication a destination may require, each checked before the
// transaction is decoded, as a real API checks the caller first: a client
// certificate (the TLS listener verifies it; the sink only insists one was
// presented), an OAuth2 bearer token it issued itself at POST
// /oauth2/token, and Standard Webhooks signatures with secrets that POST
// /admin/signing-secrets replaces at runtime. A refused request is answered
// 401 (403 without a client certificate) and never applied.

// signatureTolerance is how far a webhook-timestamp may be from the sink's
// clock, the Standard Webhooks libraries' default.
const signatureTolerance = 5 * time.Minute

// auth is the state of the required authentication.
type auth struct {
	requireClientCert bool

	// OAuth2: the one client, and the tokens issued (token → expiry).
	clientID, clientSecret string
	lifetime, advertised   time.Duration
	tokensMu               sync.Mutex
	tokens                 map[string]time.Time

	// Signature keys, replaced whole at runtime.
	keys atomic.Pointer[[][]byte]

	stats authCounters
}

type authCounters struct {
	noClientCert, unauthorized, badSignature, tokensIssued, signed atomic.Int64
}

// AuthStats counts what the required authentication did.
type AuthStats struct {
	// NoClientCert counts transactions refused for want of a client
	// certificate.
	NoClientCert int64 `json:"no_client_cert"`
	// Unauthorized counts transactions refused for a missing, unknown or
	// expired token; TokensIssued the tokens the token endpoint issued.
	Unauthorized int64 `json:"unauthorized"`
	TokensIssued int64 `json:"tokens_issued"`
	// BadSignature counts transactions refused for their signature;
	// Signed the ones whose signature verified.
	BadSignature int64 `json:"bad_signature"`
	Signed       int64 `json:"signed"`
}

// WithClientCert refuses transactions that did not come over TLS with a
// client certificate (which the listener's client CA verified).
func WithClientCert() Option {
	return func(s *Server) { s.auth.requireClientCert = true }
}

// WithOAuth2 makes the sink an OAuth2 authorization server for one client
// (client credentials grant) and refuses transactions without a valid
// token. Tokens live for lifetime; the token endpoint tells clients they
// live for advertised (lifetime when 0), so a longer advertised lifetime
// has clients send expired tokens, as a server that revokes early does.
func WithOAuth2(clientID, clientSecret string, lifetime, advertised time.Duration) Option {
	return func(s *Server) {
		if advertised == 0 {
			advertised = lifetime
		}
		s.auth.clientID, s.auth.clientSecret = clientID, clientSecret
		s.auth.lifetime, s.auth.advertised = lifetime, advertised
		s.auth.tokens = map[string]time.Time{}
	}
}

// WithSignatures refuses transactions without a Standard Webhooks
// signature made with one of secrets ("whsec_<base64>").
func WithSignatures(secrets []string) Option {
	return func(s *Server) {
		keys, err := parseSecrets(secrets)
		if err != nil {
			panic(err) // parse in the caller first with ParseSecrets
		}
		s.auth.keys.Store(&keys)
	}
}

// ParseSecrets checks Standard Webhooks secrets without echoing them.
func ParseSecrets(secrets []string) error {
	_, err := parseSecrets(secrets)
	return err
}

func parseSecrets(secrets []string) ([][]byte, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no signing secret")
	}
	keys := make([][]byte, len(secrets))
	for i, sec := range secrets {
		k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sec, "whsec_"))
		if err != nil || len(k) == 0 {
			return nil, fmt.Errorf("signing secret %d: want whsec_ followed by base64", i+1)
		}
		keys[i] = k
	}
	return keys, nil
}

// authenticate runs the required checks on a transaction request whose
// body is body. It answers the request itself and returns false when one
// fails.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, body []byte) bool {
	a := &s.auth
	if a.requireClientCert && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
		a.stats.noClientCert.Add(1)
		writeJSON(w, http.StatusForbidden, answer{Error: "client certificate required"})
		return false
	}
	if a.tokens != nil && !s.validToken(r) {
		a.stats.unauthorized.Add(1)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, answer{Error: "missing, unknown or expired bearer token"})
		return false
	}
	if keys := a.keys.Load(); keys != nil {
		if err := verify(*keys, r.Header, body, s.now()); err != nil {
			a.stats.badSignature.Add(1)
			writeJSON(w, http.StatusUnauthorized, answer{Error: err.Error()})
			return false
		}
		a.stats.signed.Add(1)
	}
	return true
}

func (s *Server) validToken(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	s.auth.tokensMu.Lock()
	defer s.auth.tokensMu.Unlock()
	exp, ok := s.auth.tokens[tok]
	if ok && !s.now().Before(exp) {
		delete(s.auth.tokens, tok)
		return false
	}
	return ok
}

// verify checks a Standard Webhooks signature: one of the space-separated
// "v1,<base64>" values must be the HMAC-SHA256 of "id.timestamp.body" with
// one of keys, and the timestamp within signatureTolerance of now.
func verify(keys [][]byte, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("webhook-id, webhook-timestamp and webhook-signature required")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp: want Unix seconds")
	}
	if d := now.Sub(time.Unix(secs, 0)); math.Abs(float64(d)) > float64(signatureTolerance) {
		return errors.New("webhook-timestamp too far from now")
	}
	for _, key := range keys {
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%s.", id, ts)
		mac.Write(body)
		want := mac.Sum(nil)
		for sig := range strings.FieldsSeq(sigs) {
			v, ok := strings.CutPrefix(sig, "v1,")
			if !ok {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(v)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errors.New("no valid signature")
}

// issueToken is the token endpoint (POST /oauth2/token): the client
// credentials grant, with the client authenticated by HTTP Basic or by
// form fields.
func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) {
	a := &s.auth
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if subtle.ConstantTimeCompare([]byte(id), []byte(a.clientID)) != 1 || subtle.ConstantTimeCompare([]byte(secret), []byte(a.clientSecret)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="sink"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	now := s.now()
	a.tokensMu.Lock()
	for t, exp := range a.tokens {
		if !now.Before(exp) {
			delete(a.tokens, t)
		}
	}
	a.tokens[tok] = now.Add(a.lifetime)
	a.tokensMu.Unlock()
	a.stats.tokensIssued.Add(1)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int(math.Ceil(a.advertised.Seconds())),
	})
}

// setSecrets replaces the signing secrets (POST /admin/signing-secrets,
// body {"secrets": ["whsec_..."]}): a receiver rotating its secret.
func (s *Server) setSecrets(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Secrets []string `json:"secrets"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, answer{Error: "want {\"secrets\": [...]}"})
		return
	}
	keys, err := parseSecrets(in.Secrets)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, answer{Error: err.Error()})
		return
	}
	s.auth.keys.Store(&keys)
	s.log.InfoContext(r.Context(), "signing secrets replaced", "secrets", len(keys))
	writeJSON(w, http.StatusOK, answer{Status: "replaced"})
}

func (s *Server) authStats() AuthStats {
	c := &s.auth.stats
	return AuthStats{
		NoClientCert: c.noClientCert.Load(), Unauthorized: c.unauthorized.Load(), TokensIssued: c.tokensIssued.Load(),
		BadSignature: c.badSignature.Load(), Signed: c.signed.Load(),
	}
}
