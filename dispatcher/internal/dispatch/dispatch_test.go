package dispatch_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/dispatcher/internal/consume"
	"github.com/spoolhq/spool/dispatcher/internal/deliver"
	"github.com/spoolhq/spool/dispatcher/internal/dispatch"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/jobstore"
)

type sendFunc func(context.Context, *spoolv1.Envelope) error

func (f sendFunc) Send(ctx context.Context, e *spoolv1.Envelope) error { return f(ctx, e) }

type counts map[string]jobstore.Counts

func (c counts) Add(id string, d jobstore.Counts) {
	v := c[id]
	c[id] = jobstore.Counts{Delivered: v.Delivered + d.Delivered, Failed: v.Failed + d.Failed, Retries: v.Retries + d.Retries}
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		want       consume.Disposition
		wantCounts jobstore.Counts
		wantLog    string
	}{
		{name: "delivered is deleted", want: consume.Delete, wantCounts: jobstore.Counts{Delivered: 1}},
		{name: "refused is left", err: &deliver.Failure{Status: 503}, want: consume.Leave, wantCounts: jobstore.Counts{Retries: 1}, wantLog: "status=503"},
		{name: "unreachable is left", err: &deliver.Failure{Err: errors.New("dial tcp: refused")}, want: consume.Leave, wantCounts: jobstore.Counts{Retries: 1}, wantLog: "status=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := counts{}
			h := dispatch.New(sendFunc(func(context.Context, *spoolv1.Envelope) error { return tt.err }), c, slog.New(slog.NewTextHandler(&logs, nil)))
			env := &spoolv1.Envelope{JobId: "job", Row: 9, Fields: []*spoolv1.Field{{Name: "iban", Value: "SECRET-IBAN"}}}
			got := h.Handle(t.Context(), consume.Message{ID: "m-9", Envelope: env})
			require.Equal(t, tt.want, got)
			require.Equal(t, counts{"job": tt.wantCounts}, c)
			require.Contains(t, logs.String(), tt.wantLog)
			require.NotContains(t, logs.String(), "SECRET-IBAN")
		})
	}
}
