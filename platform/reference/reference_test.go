package reference_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/reference"
)

func TestExtract(t *testing.T) {
	long := strings.Repeat("é", reference.MaxLen) // 2 bytes each
	tests := []struct {
		name      string
		spec      string
		header    http.Header
		body      string
		want      string
		truncated bool
	}{
		{name: "none configured", spec: "", body: `{"id":"p1"}`, want: ""},
		{name: "top-level id", spec: "body:/id", body: `{"id":"pay_123","status":"ok"}`, want: "pay_123"},
		{name: "nested", spec: "body:/data/payment/id", body: `{"data":{"payment":{"id":"p-9"}}}`, want: "p-9"},
		{name: "array index", spec: "body:/items/1/ref", body: `{"items":[{"ref":"a"},{"ref":"b"}]}`, want: "b"},
		{name: "number keeps its digits", spec: "body:/id", body: `{"id":12345678901234567890}`, want: "12345678901234567890"},
		{name: "escaped tokens", spec: "body:/a~1b/c~0d", body: `{"a/b":{"c~d":"x"}}`, want: "x"},
		{name: "object is no reference", spec: "body:/id", body: `{"id":{"x":1}}`, want: ""},
		{name: "missing member", spec: "body:/id", body: `{"ref":"x"}`, want: ""},
		{name: "body not JSON", spec: "body:/id", body: `ok`, want: ""},
		{name: "index out of range", spec: "body:/items/5", body: `{"items":["a"]}`, want: ""},
		{name: "leading zero index", spec: "body:/items/01", body: `{"items":["a","b"]}`, want: ""},
		{name: "header, any case", spec: "header:location", header: http.Header{"Location": {"/payments/p7"}}, want: "/payments/p7"},
		{name: "header absent", spec: "header:Location", header: http.Header{}, want: ""},
		{name: "long value cut on a rune", spec: "body:/id", body: `{"id":"` + long + `"}`, want: long[:reference.MaxLen], truncated: true},
		// One byte ahead, MaxLen falls inside an é: the cut backs off to
		// the rune before rather than keep half of it.
		{name: "long value cut mid-rune backs off", spec: "body:/id", body: `{"id":"a` + long + `"}`, want: ("a" + long)[:reference.MaxLen-1], truncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := reference.Parse(tt.spec)
			require.NoError(t, err)
			got, cut := f.Extract(tt.header, []byte(tt.body))
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.truncated, cut)
			require.LessOrEqual(t, len(got), reference.MaxLen)
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		spec    string
		wantErr string
		canon   string
	}{
		{spec: "body:/id", canon: "body:/id"},
		{spec: "body:/a~1b", canon: "body:/a~1b"},
		{spec: "header:location", canon: "header:Location"},
		{spec: "body:id", wantErr: "must start with /"},
		{spec: "body:/a~2", wantErr: "~ must be followed"},
		{spec: "header:", wantErr: "header name"},
		{spec: "json:/id", wantErr: "want body:"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			f, err := reference.Parse(tt.spec)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.canon, f.String())
		})
	}
}
