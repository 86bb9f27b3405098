package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/notify"
	"github.com/spoolhq/spool/platform/jobstore"
)

// eventsConfig is where job events go (package notify) and how they are
// swept. The webhook is held to the destination's rules: https unless
// -allow-insecure-destination, its URL redacted in errors, and its
// signing secrets from the environment or a file, never a flag.
type eventsConfig struct {
	webhookURL         string
	queueURL           string
	sweep              time.Duration
	sweepAfter         time.Duration
	retryFor           time.Duration
	rowsEvery          time.Duration
	signingSecretsFile string

	// Loaded by load.
	signer *deliver.Signer
}

// envEventsSigningSecrets holds the events webhook's Standard Webhooks
// secrets; its _FILE twin is a flag.
const envEventsSigningSecrets = "SPOOL_EVENTS_SIGNING_SECRETS"

func (e *eventsConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&e.webhookURL, "events-webhook-url", "", "URL job events (completed, paused, rows UNKNOWN or dead-lettered, aborted, rejected) are POSTed to as JSON; off when empty")
	fs.StringVar(&e.queueURL, "events-queue-url", "", "URL of an SQS queue job events are sent to; off when empty")
	fs.DurationVar(&e.sweep, "events-sweep", notify.DefaultSweepEvery, "how often the jobs holding unsent events are swept")
	fs.DurationVar(&e.sweepAfter, "events-sweep-after", notify.DefaultSweepAfter, "age at which a sweep sends an event its own dispatcher has not sent (it died, or gave up); more than -events-retry-for")
	fs.DurationVar(&e.retryFor, "events-retry-for", notify.DefaultRetryFor, "how long a dispatcher retries sending an event it stored, with backoff, before leaving it to the sweeps")
	fs.DurationVar(&e.rowsEvery, "events-rows-every", jobstore.DefaultRowsEvery, "least time between two rows-UNKNOWN (or two rows-dead-lettered) events of one job")
	fs.StringVar(&e.signingSecretsFile, "events-signing-secrets-file", "", "file holding one or two Standard Webhooks secrets (whsec_...) to sign every events webhook request with (or the secrets in $"+envEventsSigningSecrets+"); unsigned when neither is set")
}

// load checks the settings and reads the signing secrets; dest supplies
// the scheme rule.
func (e *eventsConfig) load(dest *destAuth, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	for _, f := range []struct {
		name  string
		value time.Duration
	}{
		{"events-sweep", e.sweep}, {"events-sweep-after", e.sweepAfter},
		{"events-retry-for", e.retryFor}, {"events-rows-every", e.rowsEvery},
	} {
		if f.value <= 0 {
			fail(fmt.Errorf("-%s %s: want more than 0", f.name, f.value))
		}
	}
	if e.sweepAfter <= e.retryFor {
		// Else a sweep sends an event its dispatcher is still retrying.
		fail(fmt.Errorf("-events-sweep-after %s: want more than -events-retry-for (%s)", e.sweepAfter, e.retryFor))
	}
	if e.webhookURL != "" {
		dest.checkScheme("events-webhook-url", e.webhookURL, fail)
	}
	secrets, ok, err := setting(lookup, envEventsSigningSecrets, "events-signing-secrets-file", e.signingSecretsFile)
	switch {
	case err != nil:
		fail(err)
	case ok && e.webhookURL == "":
		fail(fmt.Errorf("$%s given without -events-webhook-url", envEventsSigningSecrets))
	case ok:
		if e.signer, err = deliver.NewSigner(strings.Fields(secrets)...); err != nil {
			fail(fmt.Errorf("$%s: %w", envEventsSigningSecrets, err))
		}
	}
	return errors.Join(errs...)
}

// sinks are the places job events go, as configured.
func (e *eventsConfig) sinks(queue *sqs.Client) []notify.Sink {
	var sinks []notify.Sink
	if e.webhookURL != "" {
		w := &notify.Webhook{URL: e.webhookURL, Client: &http.Client{Timeout: notify.DefaultSendTimeout}}
		if e.signer != nil {
			w.Signer = e.signer
		}
		sinks = append(sinks, w)
	}
	if e.queueURL != "" {
		sinks = append(sinks, &notify.Queue{Client: queue, URL: e.queueURL})
	}
	return sinks
}
