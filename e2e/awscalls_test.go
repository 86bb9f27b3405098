package e2e

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spoolhq/spool/platform/awsconf"
)

// Every process the e2e tests start records the AWS calls it makes
// (awsconf.CallLogEnv). After the run, every call recorded must be in
// deploy/ecs/iam/aws-calls.json, the list deploy's tests check the IAM
// policies against both ways (a policy allows every listed call of its
// program and nothing else). A call the list lacks fails any run. A
// listed call no test made is only reported: some calls depend on timing
// (a register entry deleted by whichever dispatcher sees the job end, a
// key lost to a concurrent submission), so their absence from one run
// proves nothing, and the list, not the run, is what deploy's
// deterministic tests hold the policies to. -update-aws-calls adds what
// was recorded to the list; a call the code no longer makes is removed
// from it by hand.
var updateAWSCalls = flag.Bool("update-aws-calls", false, "add the calls recorded to deploy/ecs/iam/aws-calls.json")

// awsCallsFile is the list, relative to this package.
var awsCallsFile = filepath.Join("..", "deploy", "ecs", "iam", "aws-calls.json")

// normalize turns recorded calls into the list's form: queue URLs become
// queue names (the host and account are the emulator's), sorted, without
// repeats.
func normalize(calls []awsconf.Call) []awsconf.Call {
	out := make([]awsconf.Call, 0, len(calls))
	for _, c := range calls {
		if u, err := url.Parse(c.Queue); err == nil && u.Host != "" {
			c.Queue = path.Base(u.Path)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b awsconf.Call) int {
		return cmp.Or(cmp.Compare(a.Program, b.Program), cmp.Compare(a.Service, b.Service),
			cmp.Compare(a.Operation, b.Operation), cmp.Compare(a.Table, b.Table), cmp.Compare(a.Index, b.Index),
			cmp.Compare(a.Queue, b.Queue))
	})
	return slices.Compact(out)
}

// checkAWSCalls fails when logPath records a call the list lacks, or
// adds the recorded calls to the list when asked to. It returns the
// listed calls no test made, for the log.
func checkAWSCalls(logPath string) (unseen []string, err error) {
	// No log at all: no test started a process that calls AWS.
	recorded, err := awsconf.ReadCallLog(logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	got := normalize(recorded)
	var listed []awsconf.Call
	b, err := os.ReadFile(awsCallsFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", awsCallsFile, err)
	}
	if err == nil {
		if err := json.Unmarshal(b, &listed); err != nil {
			return nil, fmt.Errorf("read %s: %w", awsCallsFile, err)
		}
	}
	for _, c := range listed {
		if !slices.Contains(got, c) {
			unseen = append(unseen, callString(c))
		}
	}
	if *updateAWSCalls {
		b, err := json.MarshalIndent(normalize(append(got, listed...)), "", "  ")
		if err != nil {
			return nil, err
		}
		return unseen, os.WriteFile(awsCallsFile, append(b, '\n'), 0o644)
	}
	var unlisted []string
	for _, c := range got {
		if !slices.Contains(listed, c) {
			unlisted = append(unlisted, callString(c))
		}
	}
	if len(unlisted) > 0 {
		return unseen, fmt.Errorf("AWS calls made that %s does not list (run with -update-aws-calls, then make deploy's tests pass):\n  %s",
			awsCallsFile, strings.Join(unlisted, "\n  "))
	}
	return unseen, nil
}

func callString(c awsconf.Call) string {
	s := c.Program + " " + c.Service + ":" + c.Operation
	for _, r := range []string{c.Table, c.Index, c.Queue} {
		if r != "" {
			s += " " + r
		}
	}
	return s
}
