package envcfg

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantDur time.Duration
		wantErr bool
	}{
		{name: "default", want: "def", wantDur: time.Second},
		{name: "env fills unset flag", env: map[string]string{"SPOOL_QUEUE_URL": "from-env", "SPOOL_SEND_TIMEOUT": "3s"}, want: "from-env", wantDur: 3 * time.Second},
		{name: "flag wins over env", args: []string{"-queue-url", "from-flag"}, env: map[string]string{"SPOOL_QUEUE_URL": "from-env"}, want: "from-flag", wantDur: time.Second},
		{name: "bad env value names the variable", env: map[string]string{"SPOOL_SEND_TIMEOUT": "soon"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			q := fs.String("queue-url", "def", "queue")
			d := fs.Duration("send-timeout", time.Second, "timeout")
			err := Parse(fs, tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr {
				require.ErrorContains(t, err, "SPOOL_SEND_TIMEOUT")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, *q)
			require.Equal(t, tt.wantDur, *d)
			require.Contains(t, fs.Lookup("queue-url").Usage, "$SPOOL_QUEUE_URL")
		})
	}
}

func TestParseExcept(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantKey string
		wantURL string
	}{
		{name: "excepted flag ignores its variable", wantKey: "", wantURL: "from-env"},
		{name: "excepted flag still parses", args: []string{"-job-key", "k1"}, wantKey: "k1", wantURL: "from-env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			key := fs.String("job-key", "", "key of one file")
			url := fs.String("queue-url", "", "queue")
			env := map[string]string{"SPOOL_JOB_KEY": "from-env", "SPOOL_QUEUE_URL": "from-env"}
			err := Parse(fs, tt.args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Except("job-key"))
			require.NoError(t, err)
			require.Equal(t, tt.wantKey, *key)
			require.Equal(t, tt.wantURL, *url)
			require.NotContains(t, fs.Lookup("job-key").Usage, "$SPOOL_JOB_KEY", "-help must not promise a fallback")
		})
	}
}
