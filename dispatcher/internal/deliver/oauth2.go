package deliver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Tokens hands out the bearer token requests carry, and forgets one the
// destination refused.
type Tokens interface {
	// Token returns a token that should still be valid.
	Token(ctx context.Context) (string, error)
	// Invalidate drops token, if it is still the current one, so the next
	// Token fetches a new one.
	Invalidate(token string)
}

// maxEarly bounds how long before its expiry a token is replaced.
const maxEarly = time.Minute

// OAuth2Options configure an OAuth2 token cache.
type OAuth2Options struct {
	// TokenURL, ClientID, ClientSecret and Scopes are the client
	// credentials grant's.
	TokenURL     string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// HTTPClient calls the token endpoint; its TLS settings are the
	// destination's. http.DefaultClient when nil.
	HTTPClient *http.Client
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// OAuth2 is a cache of client-credentials access tokens: one token is
// fetched and shared by every request, replaced before it expires (when a
// fifth of its lifetime, at most a minute, is left), and dropped when the
// destination answers 401 with it. Concurrent requests that find no valid
// token wait for a single fetch. It is safe for concurrent use.
type OAuth2 struct {
	cfg    clientcredentials.Config
	client *http.Client
	now    func() time.Time

	// lock is a one-slot semaphore rather than a mutex, so a caller
	// waiting for another's fetch still honours its context.
	lock      chan struct{}
	tok       *oauth2.Token
	refreshAt time.Time
}

// NewOAuth2 returns an empty cache: the first Token fetches.
func NewOAuth2(o OAuth2Options) *OAuth2 {
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &OAuth2{
		cfg:    clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, TokenURL: o.TokenURL, Scopes: o.Scopes},
		client: o.HTTPClient,
		now:    o.Now,
		lock:   make(chan struct{}, 1),
	}
}

// Token returns the cached token, or fetches one. A fetch's error names
// the token endpoint's status and OAuth2 error code, never its body or
// the credentials.
func (o *OAuth2) Token(ctx context.Context) (string, error) {
	select {
	case o.lock <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("wait for access token: %w", ctx.Err())
	}
	defer func() { <-o.lock }()
	now := o.now()
	if o.tok != nil && now.Before(o.refreshAt) {
		return o.tok.AccessToken, nil
	}
	tok, err := o.cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, o.client))
	if err != nil {
		return "", tokenError(err)
	}
	o.tok, o.refreshAt = tok, refreshAt(now, tok.Expiry)
	return tok.AccessToken, nil
}

// refreshAt is when a token fetched at now and expiring at expiry is
// replaced. A token without an expiry is kept until refused.
func refreshAt(now, expiry time.Time) time.Time {
	if expiry.IsZero() {
		return time.Unix(1<<62, 0)
	}
	return expiry.Add(-min(expiry.Sub(now)/5, maxEarly))
}

// Invalidate drops token if it is the cached one. A request that was
// refused with an older token does not drop the newer one another request
// fetched meanwhile.
func (o *OAuth2) Invalidate(token string) {
	o.lock <- struct{}{}
	defer func() { <-o.lock }()
	if o.tok != nil && o.tok.AccessToken == token {
		o.tok = nil
	}
}

// tokenError describes a failed fetch without what could carry a secret:
// the token endpoint's body may echo the request, and a URL its query.
func tokenError(err error) error {
	if re := (*oauth2.RetrieveError)(nil); errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if re.ErrorCode != "" {
			return fmt.Errorf("token endpoint answered %d %s (%s)", status, http.StatusText(status), re.ErrorCode)
		}
		return fmt.Errorf("token endpoint answered %d %s", status, http.StatusText(status))
	}
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return fmt.Errorf("token endpoint unreachable: %w", ue.Err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("fetch access token: %w", err)
	}
	// Other errors are the library's own about a malformed answer.
	return fmt.Errorf("fetch access token: %v", err)
}
