package top

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

var at = time.Date(2026, 11, 30, 9, 15, 42, 0, time.UTC)

func fleet() Snapshot {
	return Snapshot{
		At: at,
		Dispatchers: []Dispatcher{
			{Addr: "10.0.1.17:50052", ID: "670c53b9-c09c-4503-99eb-821608eb035d", Flow: &spoolv1.FlowControl{
				ConcurrencyLimit: 16, InFlight: 11, RateLimit: 150, BreakerState: spoolv1.BreakerState_BREAKER_STATE_CLOSED,
				LatencyRecent: durationpb.New(123400 * time.Microsecond), LatencyBaseline: durationpb.New(99 * time.Millisecond),
			}},
			{Addr: "10.0.2.9:50052", ID: "5a56bee3-8596-4e92-8383-d71cc90365a0", Flow: &spoolv1.FlowControl{
				ConcurrencyLimit: 4, InFlight: 0, BreakerState: spoolv1.BreakerState_BREAKER_STATE_OPEN, BreakerOpens: 3,
				LatencyRecent: durationpb.New(1234 * time.Millisecond), LatencyBaseline: durationpb.New(800 * time.Microsecond),
			}},
			{Addr: "10.0.3.4:50052", Err: errors.New("DeadlineExceeded: context deadline exceeded")},
			{Addr: "10.0.4.4:50052", Err: errors.New(`Unavailable: connection error: desc = "transport: Error while dialing: dial tcp 10.0.4.4:50052: connect: connection refused"`)},
		},
		Jobs: []Job{
			{Job: &spoolv1.Job{JobId: "cfda2e78-0590-4de8-a60a-fb04041dd7a9", FileName: "payroll-2026-11.csv", State: spoolv1.JobState_JOB_STATE_SEALED,
				Total: 20000, Delivered: 5400, Failed: 10, DuplicateRows: 20, DeadLettered: 2, Unknown: 1}, Rate: 118.4, HasRate: true},
			{Job: &spoolv1.Job{JobId: "0b1c2d3e-aaaa-bbbb-cccc-000000000001", FileName: "bonus.csv", State: spoolv1.JobState_JOB_STATE_RECEIVING,
				RowsPublished: 300, Paused: true}},
		},
		Open: 3,
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name  string
		snap  Snapshot
		width int
		want  []string
	}{
		{
			name:  "wide: every column, full ids",
			snap:  fleet(),
			width: 0,
			want: []string{
				"spool top  09:15:42  4 dispatchers, 2 unreachable",
				"DISPATCHER       ID                                    LIMIT  IN FLIGHT  RATE LIMIT  BREAKER  OPENS  LATENCY NOW/BASE",
				"10.0.1.17:50052  670c53b9-c09c-4503-99eb-821608eb035d     16         11       150/s  closed       0  123ms/99ms",
				"10.0.2.9:50052   5a56bee3-8596-4e92-8383-d71cc90365a0      4          0         off  OPEN         3  1.23s/800µs",
				"10.0.3.4:50052   unreachable: DeadlineExceeded: context deadline exceeded",
				"10.0.4.4:50052   unreachable: Unavailable: connect: connection refused",
				"",
				"JOBS  3 open",
				"JOB                                   STATE                SETTLED      %        RATE  UNKNOWN  FAILED  DLQ  FILE",
				"cfda2e78-0590-4de8-a60a-fb04041dd7a9  SEALED            5432/20000  27.2%  118 rows/s        1      10    2  payroll-2026-11.csv",
				"0b1c2d3e-aaaa-bbbb-cccc-000000000001  RECEIVING paused       0/300   0.0%           -        0       0    0  bonus.csv",
				"and 1 more",
			},
		},
		{
			name:  "80 columns: ids shortened, the least telling columns left out",
			snap:  fleet(),
			width: 80,
			want: []string{
				"spool top  09:15:42  4 dispatchers, 2 unreachable",
				"DISPATCHER       LIMIT  IN FLIGHT  RATE LIMIT  BREAKER  OPENS  LATENCY NOW/BASE",
				"10.0.1.17:50052     16         11       150/s  closed       0  123ms/99ms",
				"10.0.2.9:50052       4          0         off  OPEN         3  1.23s/800µs",
				"10.0.3.4:50052   unreachable: DeadlineExceeded: context deadline exceeded",
				"10.0.4.4:50052   unreachable: Unavailable: connect: connection refused",
				"",
				"JOBS  3 open",
				"JOB       STATE                SETTLED      %        RATE  UNKNOWN  FAILED  DLQ",
				"cfda2e78  SEALED            5432/20000  27.2%  118 rows/s        1      10    2",
				"0b1c2d3e  RECEIVING paused       0/300   0.0%           -        0       0    0",
				"and 1 more",
			},
		},
		{
			name:  "40 columns: only what matters most, the rest cut",
			snap:  fleet(),
			width: 40,
			want: []string{
				"spool top  09:15:42  4 dispatchers, 2 u…",
				"DISPATCHER       LIMIT  IN FLIGHT  BREA…",
				"10.0.1.17:50052     16         11  clos…",
				"10.0.2.9:50052       4          0  OPEN",
				"10.0.3.4:50052   unreachable: DeadlineE…",
				"10.0.4.4:50052   unreachable: Unavailab…",
				"",
				"JOBS  3 open",
				"JOB       STATE                SETTLED",
				"cfda2e78  SEALED            5432/20000",
				"0b1c2d3e  RECEIVING paused       0/300",
				"and 1 more",
			},
		},
		{
			name: "no flow control, no jobs",
			snap: Snapshot{At: at, Dispatchers: []Dispatcher{{Addr: "127.0.0.1:50052", ID: "d1"}}},
			want: []string{
				"spool top  09:15:42  1 dispatcher",
				"DISPATCHER       ID  LIMIT  IN FLIGHT  RATE LIMIT  BREAKER  OPENS  LATENCY NOW/BASE",
				"127.0.0.1:50052  d1      -          -           -  -            -  -",
				"",
				"JOBS  0 open",
			},
		},
		{
			name: "jobs could not be listed",
			snap: Snapshot{At: at, Dispatchers: []Dispatcher{{Addr: "127.0.0.1:1", Err: errors.New("Unavailable: connection refused\n  and more")}}, JobsErr: errNoDispatcher},
			want: []string{
				"spool top  09:15:42  1 dispatcher, 1 unreachable",
				"DISPATCHER   ID  LIMIT  IN FLIGHT  RATE LIMIT  BREAKER  OPENS  LATENCY NOW/BASE",
				"127.0.0.1:1  unreachable: Unavailable: connection refused and more",
				"",
				"JOBS  unavailable: no dispatcher answered",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Render(tt.snap, tt.width)
			require.Equal(t, tt.want, got, "got:\n%s", strings.Join(got, "\n"))
			for _, l := range got {
				if tt.width > 0 {
					require.LessOrEqual(t, utf8.RuneCountInString(l), tt.width, "%q", l)
				}
				require.NotContains(t, l, "\x1b")
			}
		})
	}
}
