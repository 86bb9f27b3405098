// Package deliver POSTs one transaction to the destination HTTP API.
//
// A transaction moves money, so this package is careful about one thing
// above all: a request is sent once per call and never re-sent behind the
// caller's back. Whether to try again is decided by the caller, which knows
// whether the transaction was already delivered.
package deliver

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/reference"
)

// Names of the fields Spool adds to every body, after the row's own fields.
const (
	FieldJobID = "spool_job_id"
	FieldRow   = "spool_row"
)

// DefaultIdempotencyHeader carries the transaction key unless configured
// otherwise.
const DefaultIdempotencyHeader = "Idempotency-Key"

// maxDrain bounds how much of a response body is read (and discarded) so
// the connection can be reused; a bigger body costs a new connection instead.
const maxDrain = 64 << 10

// Options configure a Client.
type Options struct {
	// URL receives one POST per transaction.
	URL string
	// IdempotencyHeader names the header that carries the transaction key;
	// DefaultIdempotencyHeader when empty.
	IdempotencyHeader string
	// Header is added to every request (authorisation, tenant, ...).
	Header http.Header
	// Timeout bounds one request, response headers and body included.
	Timeout time.Duration
	// MaxConns is how many requests run at once; idle connections are kept
	// for that many, so steady traffic never opens new ones.
	MaxConns int
	// TracerProvider makes the requests' client spans; the global one when
	// nil.
	TracerProvider trace.TracerProvider
	// TLS configures the connections (trust, client certificate, minimum
	// version); Go's defaults when nil.
	TLS *tls.Config
	// Tokens, when set, supply the bearer token of every request
	// (OAuth2 client credentials).
	Tokens Tokens
	// Signer, when set, signs every request in the Standard Webhooks form,
	// with the transaction key as the webhook id.
	Signer *Signer
	// Now is the clock of signatures; time.Now when nil.
	Now func() time.Time
	// ReferenceFrom is where an accepting answer carries the destination's
	// reference for the transaction; an envelope's own reference_from
	// (from its file's profile) takes precedence.
	ReferenceFrom reference.From
}

// Client sends transactions. It is safe for concurrent use.
type Client struct {
	url       string
	keyHeader string
	header    http.Header
	timeout   time.Duration
	tokens    Tokens
	signer    *Signer
	now       func() time.Time
	http      *http.Client
	refFrom   reference.From
}

// New returns a client with its own connection pool.
func New(o Options) *Client {
	if o.IdempotencyHeader == "" {
		o.IdempotencyHeader = DefaultIdempotencyHeader
	}
	if o.MaxConns < 1 {
		o.MaxConns = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = o.MaxConns
	t.MaxIdleConnsPerHost = o.MaxConns
	if o.TLS != nil {
		t.TLSClientConfig = o.TLS.Clone()
	}
	return &Client{
		url:       o.URL,
		keyHeader: o.IdempotencyHeader,
		header:    o.Header.Clone(),
		timeout:   o.Timeout,
		tokens:    o.Tokens,
		signer:    o.Signer,
		now:       o.Now,
		refFrom:   o.ReferenceFrom,
		http: &http.Client{
			// A client span per request, whose context the request carries
			// in traceparent: the destination's logs join the row's trace.
			// The timeout is Send's context's, which bounds a token fetch
			// and a retry after a 401 too.
			Transport: otelhttp.NewTransport(t, otelhttp.WithTracerProvider(o.TracerProvider)),
			// A redirect would be followed as a GET, or re-send the payment
			// elsewhere; neither is a delivery. The 3xx is returned as a
			// failure instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// maxExcerpt bounds the part of a refusal's body kept as its reason.
const maxExcerpt = 256

// Failure is a delivery that did not get a 2xx answer.
type Failure struct {
	// Status is the HTTP status code, or 0 when no response came back.
	Status int
	// Err is the transport error when no response came back.
	Err error
	// Written says the request's headers reached the connection, so the
	// destination may have acted on it. A failure with Written false
	// provably never left the machine (a dial or TLS error, say) and is
	// safe to retry whatever the destination's idempotency.
	Written bool
	// Excerpt is the start of a refusal's body. It may echo payroll data:
	// it goes to the delivery ledger for reconciliation, and never into
	// an error message or a log.
	Excerpt string
	// RetryAfter is the wait the destination asked for in a Retry-After
	// header (delay seconds or an HTTP date), 0 when it named none.
	RetryAfter time.Duration
}

func (f *Failure) Error() string {
	if f.Status != 0 {
		return fmt.Sprintf("destination answered %d %s", f.Status, http.StatusText(f.Status))
	}
	return fmt.Sprintf("destination unreachable: %v", f.Err)
}

func (f *Failure) Unwrap() error { return f.Err }

// Receipt is what an accepting answer said about the transaction.
type Receipt struct {
	// Reference is the destination's reference for it, as configured (see
	// package reference); empty when none is configured or the answer had
	// none. Truncated says a longer one was cut to reference.MaxLen.
	Reference string
	Truncated bool
}

// Send POSTs e once. It returns the receipt when the destination answered
// 2xx, and otherwise a *Failure (or an error building the request).
//
// The one exception to "once" is a 401 with an OAuth2 token: a 401 says the
// request was refused before anything was applied, so the token is dropped,
// a new one fetched and the request sent a second time, within the same
// timeout and so within the caller's claim on the transaction. Only the
// second request's failure is returned: whether anything may have been
// applied is its alone to say.
func (c *Client) Send(ctx context.Context, e *spoolv1.Envelope) (Receipt, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	body := Body(e)
	token, err := c.token(ctx)
	if err != nil {
		return Receipt{}, err
	}
	receipt, err := c.post(ctx, e, body, token)
	if f, ok := IsFailure(err); ok && f.Status == http.StatusUnauthorized && c.tokens != nil {
		c.tokens.Invalidate(token)
		if token, err = c.token(ctx); err != nil {
			return Receipt{}, err
		}
		receipt, err = c.post(ctx, e, body, token)
	}
	return receipt, err
}

// token returns the bearer token to send, "" without OAuth2. A token that
// cannot be had is a failure that never left the machine: retryable.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.tokens == nil {
		return "", nil
	}
	token, err := c.tokens.Token(ctx)
	if err != nil {
		return "", &Failure{Err: fmt.Errorf("access token: %w", err)}
	}
	return token, nil
}

// post sends one request.
func (c *Client) post(ctx context.Context, e *spoolv1.Envelope, body []byte, token string) (Receipt, error) {
	req, err := c.request(ctx, e, body, token)
	if err != nil {
		return Receipt{}, err
	}

	// Whether anything reached the wire decides whether a failed request
	// may have been applied. The transport writes headers first, so a
	// request none of whose headers were written was never seen.
	var written atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders: func() { written.Store(true) },
		WroteRequest: func(httptrace.WroteRequestInfo) { written.Store(true) },
	}))

	resp, err := c.http.Do(req)
	if err != nil {
		return Receipt{}, &Failure{Err: RedactURLError(err), Written: written.Load()}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxExcerpt))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		return Receipt{}, &Failure{
			Status: resp.StatusCode, Written: true, Excerpt: strings.ToValidUTF8(string(excerpt), ""),
			RetryAfter: RetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	}
	from := c.referenceFrom(e)
	var answer []byte
	if from.NeedsBody() {
		// Read only as far as the drain would: a reference deeper than
		// that in a bigger answer is not found, and the row is still
		// delivered. Never logged or returned whole: an answer may echo
		// the payroll data.
		answer, _ = io.ReadAll(io.LimitReader(resp.Body, maxDrain))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	ref, cut := from.Extract(resp.Header, answer)
	return Receipt{Reference: ref, Truncated: cut}, nil
}

// referenceFrom is where e's reference is found: its profile's choice,
// else the destination's. The ingestor refused a profile whose spec does
// not parse, so one that does not here (an envelope from elsewhere) falls
// back to the destination's.
func (c *Client) referenceFrom(e *spoolv1.Envelope) reference.From {
	if spec := e.GetReferenceFrom(); spec != "" {
		if f, err := reference.Parse(spec); err == nil {
			return f
		}
	}
	return c.refFrom
}

// request builds one request for e; post sends it, Render shows it.
func (c *Client) request(ctx context.Context, e *spoolv1.Envelope, body []byte, token string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request for row %d: %w", e.GetRow(), RedactURLError(err))
	}
	// net/http's Transport silently re-sends a request that failed on a
	// reused keep-alive connection when it judges the request replayable,
	// and it judges any POST carrying an Idempotency-Key header replayable
	// once it can rewind the body through GetBody. The destination may
	// already have moved the money before the connection died, so the
	// transport must never resend on its own: without GetBody it cannot.
	req.GetBody = nil
	for k, vs := range c.header {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(c.keyHeader, e.GetTransactionKey())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c.signer != nil {
		// The id is the transaction key, stable across attempts, so a
		// receiver deduplicates on it; the timestamp and signature are
		// fresh per request, as the receiver bounds their age.
		at := c.now()
		req.Header.Set(HeaderWebhookID, e.GetTransactionKey())
		req.Header.Set(HeaderWebhookTimestamp, strconv.FormatInt(at.Unix(), 10))
		req.Header.Set(HeaderWebhookSignature, c.signer.Sign(e.GetTransactionKey(), at, body))
	}
	return req, nil
}

// RetryAfter parses a Retry-After value, delay seconds or an HTTP date,
// into a wait from now. It returns 0 for an empty, malformed or past value:
// the caller's own backoff then applies.
func RetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// Bounded before the multiplication, so a huge value cannot wrap.
		return time.Duration(min(secs, int64(365*24*time.Hour/time.Second))) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil || !t.After(now) {
		return 0
	}
	return t.Sub(now)
}

// IsFailure reports whether err is a *Failure, and returns it.
func IsFailure(err error) (*Failure, bool) {
	var f *Failure
	ok := errors.As(err, &f)
	return f, ok
}

// Body returns the JSON object sent for e: the body the file's profile
// mapped, when the ingestor built one (it is sent exactly as built, so a
// decimal keeps the file's digits); otherwise the row's fields by name, in
// column order, then spool_job_id and spool_row. The latter is written by hand
// rather than from a map so the order is the file's, which makes requests
// readable and reproducible. A column named like one of Spool's fields
// would produce a duplicate key; the ingestor is where such headers belong
// to be refused.
func Body(e *spoolv1.Envelope) []byte {
	if mapped := e.GetBody(); mapped != "" {
		return []byte(mapped)
	}
	b := make([]byte, 0, 256)
	b = append(b, '{')
	for _, f := range e.GetFields() {
		b = appendString(b, f.GetName())
		b = append(b, ':')
		b = appendString(b, f.GetValue())
		b = append(b, ',')
	}
	b = appendString(b, FieldJobID)
	b = append(b, ':')
	b = appendString(b, e.GetJobId())
	b = append(b, ',')
	b = appendString(b, FieldRow)
	b = append(b, ':')
	b = strconv.AppendInt(b, e.GetRow(), 10)
	return append(b, '}')
}

// appendString appends s as a JSON string, escaped by encoding/json.
func appendString(b []byte, s string) []byte {
	q, err := json.Marshal(s)
	if err != nil {
		// Marshalling a string cannot fail: invalid UTF-8 is replaced.
		panic(err)
	}
	return append(b, q...)
}
