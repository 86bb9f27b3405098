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
