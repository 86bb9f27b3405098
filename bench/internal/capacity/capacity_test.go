package capacity

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCostOfMillion(t *testing.T) {
	c := CostOfMillion(map[string]float64{
		"SQS SendMessageBatch":   0.1, // ten rows a batch
		"SQS ReceiveMessage":     0.1,
		"SQS DeleteMessageBatch": 0.1,
		"DynamoDB UpdateItem":    2,
		"DynamoDB GetItem":       1,
	})
	require.InDelta(t, 0.3, c.Units[Request], 1e-9)
	require.InDelta(t, 2, c.Units[Write], 1e-9)
	require.InDelta(t, 1, c.Units[Read], 1e-9)
	// 0.3 × 0.40 + 2 × 0.625 + 1 × 0.125 = 0.12 + 1.25 + 0.125
	require.InDelta(t, 1.495, c.Total, 1e-9)
	require.InDelta(t, 1.25, c.PerKind[Write], 1e-9)
}

func TestKindOf(t *testing.T) {
	tests := map[string]Kind{
		"SQS ChangeMessageVisibilityBatch": Request,
		"DynamoDB PutItem":                 Write,
		"DynamoDB Query":                   Read,
		"DynamoDB DescribeTable":           Unknown,
		"other":                            Unknown,
	}
	for op, want := range tests {
		require.Equal(t, want, KindOf(op), op)
	}
}

func TestTasksFor(t *testing.T) {
	perTask := RowsPerSecond(16, 200*time.Millisecond, 0.85) // 68 rows/s
	require.InDelta(t, 68, perTask, 1e-9)

	// 1 M rows in 20 min is 833 rows/s: 13 tasks of 68.
	p := TasksFor(1_000_000, 20*time.Minute, perTask, 0)
	require.Equal(t, Plan{Tasks: 13, Rate: 1_000_000 / 1200.0, Bound: "tasks"}, p)

	// A destination capped at 50 requests/s: one task is enough, and the
	// file takes 20 000 s however many run.
	p = TasksFor(1_000_000, 20*time.Minute, perTask, 50)
	require.Equal(t, Plan{Tasks: 1, Rate: 50, Bound: "destination rate limit", Shortest: 20_000 * time.Second}, p)
}
