package deliver

import (
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Redacted replaces the values of headers that may carry a credential in
// a rendered request.
const Redacted = "REDACTED"

// Render returns the request Send would send for e, sending nothing: its
// method, URL (user information and query redacted, as RedactURL does in
// logs: either may carry a credential), headers in name order and
// body, built by the same code. The values of the configured headers, of
// Authorization (no token is fetched: a bearer token stands as REDACTED)
// and of the signature are redacted. The transport adds its own headers
// (Host, Content-Length, User-Agent, traceparent) on the way out; they are
// not shown.
func (c *Client) Render(e *spoolv1.Envelope) (*spoolv1.RenderedRequest, error) {
	body := Body(e)
	token := ""
	if c.tokens != nil {
		token = Redacted
	}
	req, err := c.request(context.Background(), e, body, token)
	if err != nil {
		return nil, err
	}
	u := *req.URL
	if u.User != nil {
		u.User = url.User(Redacted)
	}
	redactQuery(&u)
	out := &spoolv1.RenderedRequest{Row: e.GetRow(), Method: req.Method, Url: u.String(), Body: string(body)}
	for _, k := range slices.Sorted(maps.Keys(req.Header)) {
		for _, v := range req.Header[k] {
			if c.secretHeader(k) {
				v = Redacted
			}
			out.Headers = append(out.Headers, &spoolv1.HeaderValue{Name: k, Value: v})
		}
	}
	return out, nil
}

// secretHeader says the header's value may be a credential.
func (c *Client) secretHeader(name string) bool {
	_, configured := c.header[name]
	return configured || name == "Authorization" || name == http.CanonicalHeaderKey(HeaderWebhookSignature)
}
