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
// (awsconf.CallLogEnv). After the run, the calls are compared with
// deploy/ecs/iam/aws-calls.json, the list deploy's tests check the IAM
// policies against, both ways: a policy must allow every call in it, and
// nothing else. A call the list lacks fails the run here; a listed call
// no test made fails a full run (no -run), since then the list claims
// more than the code was seen to do. -update-aws-calls rewrites the list
// from what was recorded instead (a full run replaces it, a partial one
// adds to it); then deploy's tests say which policy must change.
var updateAWSCalls = flag.Bool("update-aws-calls", false, "rewrite deploy/ecs/iam/aws-calls.json from the calls recorded")

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

// checkAWSCalls compares the calls recorded in logPath with the list, or
// rewrites the list when asked to. full says every test ran and passed.
func checkAWSCalls(logPath string, full bool) error {
	// No log at all: no test started a process that calls AWS.
	recorded, err := awsconf.ReadCallLog(logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	got := normalize(recorded)
	var listed []awsconf.Call
	b, err := os.ReadFile(awsCallsFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", awsCallsFile, err)
	}
	if err == nil {
		if err := json.Unmarshal(b, &listed); err != nil {
			return fmt.Errorf("read %s: %w", awsCallsFile, err)
		}
	}
	if *updateAWSCalls {
		if !full {
			got = normalize(append(got, listed...))
		}
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(awsCallsFile, append(b, '\n'), 0o644)
	}
	var unlisted, unseen []string
	for _, c := range got {
		if !slices.Contains(listed, c) {
			unlisted = append(unlisted, callString(c))
		}
	}
	for _, c := range listed {
		if !slices.Contains(got, c) {
			unseen = append(unseen, callString(c))
		}
	}
	var errs []error
	if len(unlisted) > 0 {
		errs = append(errs, fmt.Errorf("AWS calls made that %s does not list (run with -update-aws-calls, then make deploy's tests pass):\n  %s",
			awsCallsFile, strings.Join(unlisted, "\n  ")))
	}
	if full && len(unseen) > 0 {
		errs = append(errs, fmt.Errorf("AWS calls %s lists that no test made (a full run with -update-aws-calls drops them):\n  %s",
			awsCallsFile, strings.Join(unseen, "\n  ")))
	}
	return errors.Join(errs...)
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
