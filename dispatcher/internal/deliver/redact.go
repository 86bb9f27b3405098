package deliver

import (
	"errors"
	"net/url"
)

// RedactURL returns u fit for a log or a status: its password and its
// query, either of which may carry a credential, are replaced. An
// unparsable URL is not shown at all.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	redactQuery(p)
	p.Fragment, p.RawFragment = "", ""
	return p.Redacted()
}

// redactQuery replaces u's query, which may carry a credential.
func redactQuery(u *url.URL) {
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = Redacted, false
	}
}

// RedactURLError redacts the URL net/http names in its errors (as
// RedactURL): a send's error is logged, the destination's and the events
// webhook's alike.
func RedactURLError(err error) error {
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: ue.Err}
	}
	return err
}
