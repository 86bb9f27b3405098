package deploy_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/awsconf"
)

// The IAM policies are proven against the AWS calls the code was seen to
// make: the e2e tests run every process with awsconf's call log on and
// keep ecs/iam/aws-calls.json equal to what they recorded (see
// e2e/awscalls_test.go). Here each policy must allow every call of its
// program, on the exact resource (queue, dead-letter queue, table, index),
// and allow nothing no call needs.

// policyFiles names the policy of each program that calls AWS: the two
// task roles, and the operator who runs `spool init`.
var policyFiles = map[string]string{
	"ingestor":   "iam/ingestor-task-policy.json",
	"dispatcher": "iam/dispatcher-task-policy.json",
	"spool":      "iam/spool-init-policy.json",
}

// stringList is an IAM field that is a string or a list of strings.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = stringList{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(l))
}

type iamPolicy struct {
	Version   string
	Statement []struct {
		Sid      string
		Effect   string
		Action   stringList
		Resource stringList
	}
}

// grant is one action allowed on one resource.
type grant struct{ Action, Resource string }

func (g grant) String() string { return g.Action + " on " + g.Resource }

func (p iamPolicy) grants() []grant {
	var out []grant
	for _, st := range p.Statement {
		for _, a := range st.Action {
			for _, r := range st.Resource {
				out = append(out, grant{a, r})
			}
		}
	}
	return out
}

// batchActions are the SDK operations authorised by another operation's
// action: IAM has no action of their own.
var batchActions = map[string]string{
	"SendMessageBatch":             "SendMessage",
	"DeleteMessageBatch":           "DeleteMessage",
	"ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}

// account is where the example deployment lives: the task definitions'
// region and account.
type account struct{ region, id string }

// need returns the grant a call needs in acct.
func (acct account) need(c awsconf.Call) (grant, error) {
	op := cmp.Or(batchActions[c.Operation], c.Operation)
	switch c.Service {
	case "SQS":
		if c.Queue == "" {
			return grant{}, fmt.Errorf("%s %s:%s names no queue", c.Program, c.Service, c.Operation)
		}
		return grant{"sqs:" + op, "arn:aws:sqs:" + acct.region + ":" + acct.id + ":" + c.Queue}, nil
	case "DynamoDB":
		if c.Table == "" {
			return grant{}, fmt.Errorf("%s %s:%s names no table", c.Program, c.Service, c.Operation)
		}
		arn := "arn:aws:dynamodb:" + acct.region + ":" + acct.id + ":table/" + c.Table
		if c.Index != "" {
			// A table's ARN does not cover its indexes.
			arn += "/index/" + c.Index
		}
		return grant{"dynamodb:" + op, arn}, nil
	}
	return grant{}, fmt.Errorf("%s calls %s, which the IAM check does not know", c.Program, c.Service)
}

// checkPolicy returns the calls the grants do not allow, and the grants
// no call needs.
func checkPolicy(acct account, calls []awsconf.Call, grants []grant) (denied []string, unused []grant, err error) {
	needed := map[grant]bool{}
	for _, c := range calls {
		g, err := acct.need(c)
		if err != nil {
			return nil, nil, err
		}
		needed[g] = true
		if !slices.Contains(grants, g) {
			denied = append(denied, fmt.Sprintf("%s %s (needs %s)", c.Program, c.Operation, g))
		}
	}
	for _, g := range grants {
		if !needed[g] {
			unused = append(unused, g)
		}
	}
	slices.Sort(denied)
	return slices.Compact(denied), unused, nil
}

func readCalls(tb testing.TB) []awsconf.Call {
	tb.Helper()
	var calls []awsconf.Call
	readJSON(tb, "iam/aws-calls.json", &calls)
	require.NotEmpty(tb, calls)
	return calls
}

// exampleAccount reads the region and account of the example deployment,
// and its queue and table names, off the task definitions.
func exampleAccount(tb testing.TB) (acct account, queue, table string) {
	tb.Helper()
	var td taskDefinition
	readJSON(tb, "dispatcher-task.json", &td)
	env := td.ContainerDefinitions[0].env()
	q := queueURLPattern.FindStringSubmatch(env["SPOOL_QUEUE_URL"])
	require.NotNil(tb, q)
	return account{region: q[1], id: q[2]}, q[3], env["SPOOL_TABLE"]
}

// TestIAMPoliciesMatchRecordedCalls is the proof: every recorded call is
// allowed by its program's policy, and every grant is used by a call.
func TestIAMPoliciesMatchRecordedCalls(t *testing.T) {
	acct, queue, table := exampleAccount(t)
	byProgram := map[string][]awsconf.Call{}
	for _, c := range readCalls(t) {
		require.Contains(t, policyFiles, c.Program, "%s calls AWS and has no policy", c.Program)
		// The e2e stack names its resources as the example deployment does;
		// a renamed queue or table would make the comparison meaningless.
		if c.Queue != "" {
			require.Contains(t, []string{queue, queue + "-dlq"}, c.Queue, "a queue the deployment does not have")
		}
		if c.Table != "" {
			require.Equal(t, table, c.Table, "a table the deployment does not have")
		}
		byProgram[c.Program] = append(byProgram[c.Program], c)
	}
	for program, file := range policyFiles {
		t.Run(file, func(t *testing.T) {
			var p iamPolicy
			readJSON(t, file, &p)
			denied, unused, err := checkPolicy(acct, byProgram[program], p.grants())
			require.NoError(t, err)
			require.Empty(t, denied, "calls of %s that %s does not allow", program, file)
			require.Empty(t, unused, "grants of %s that no call of %s needs", file, program)
		})
	}
}

// TestIAMPolicyShape: plain allow statements, no wildcards, nothing twice.
func TestIAMPolicyShape(t *testing.T) {
	for _, file := range policyFiles {
		t.Run(file, func(t *testing.T) {
			var p iamPolicy
			readJSON(t, file, &p)
			require.Equal(t, "2012-10-17", p.Version)
			for _, st := range p.Statement {
				require.Equal(t, "Allow", st.Effect, st.Sid)
				require.NotEmpty(t, st.Action, st.Sid)
				require.NotEmpty(t, st.Resource, st.Sid)
				for _, s := range append(slices.Clone(st.Action), st.Resource...) {
					require.NotContains(t, s, "*", "no wildcards: %s", st.Sid)
				}
			}
			grants := p.grants()
			require.Len(t, slices.Compact(slices.SortedFunc(slices.Values(grants), func(a, b grant) int {
				return strings.Compare(a.String(), b.String())
			})), len(grants), "a grant is listed twice")
		})
	}
}

// TestIAMCheck shows the check finds each kind of mismatch.
func TestIAMCheck(t *testing.T) {
	acct := account{region: "eu-west-1", id: "123456789012"}
	const (
		queue = "arn:aws:sqs:eu-west-1:123456789012:q"
		dlq   = "arn:aws:sqs:eu-west-1:123456789012:q-dlq"
		table = "arn:aws:dynamodb:eu-west-1:123456789012:table/t"
		index = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/index/i"
	)
	send := awsconf.Call{Program: "p", Service: "SQS", Operation: "SendMessageBatch", Queue: "q"}
	deadLetter := awsconf.Call{Program: "p", Service: "SQS", Operation: "SendMessage", Queue: "q-dlq"}
	query := awsconf.Call{Program: "p", Service: "DynamoDB", Operation: "Query", Table: "t", Index: "i"}
	tests := []struct {
		name   string
		calls  []awsconf.Call
		grants []grant
		denied int
		unused []grant
		err    bool
	}{
		{name: "a batch call is allowed by its single action", calls: []awsconf.Call{send}, grants: []grant{{"sqs:SendMessage", queue}}},
		{name: "the queue does not cover its dead-letter queue", calls: []awsconf.Call{send, deadLetter}, grants: []grant{{"sqs:SendMessage", queue}}, denied: 1},
		{name: "the table does not cover its index", calls: []awsconf.Call{query}, grants: []grant{{"dynamodb:Query", table}}, denied: 1, unused: []grant{{"dynamodb:Query", table}}},
		{name: "the index grant", calls: []awsconf.Call{query}, grants: []grant{{"dynamodb:Query", index}}},
		{name: "a grant nothing needs", calls: []awsconf.Call{send}, grants: []grant{{"sqs:SendMessage", queue}, {"sqs:DeleteMessage", dlq}}, unused: []grant{{"sqs:DeleteMessage", dlq}}},
		{name: "a call without its resource", calls: []awsconf.Call{{Program: "p", Service: "DynamoDB", Operation: "BatchWriteItem"}}, err: true},
		{name: "a service the check does not know", calls: []awsconf.Call{{Program: "p", Service: "S3", Operation: "PutObject"}}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			denied, unused, err := checkPolicy(acct, tt.calls, tt.grants)
			if tt.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Len(t, denied, tt.denied, "%v", denied)
			require.Equal(t, tt.unused, unused)
		})
	}
}
