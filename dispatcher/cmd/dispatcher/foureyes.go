package main

import (
	"fmt"
	"strings"

	"github.com/spoolhq/spool/dispatcher/internal/dispatchrpc"
)

// defaultFourEyes is the -four-eyes default: the two actions that can pay
// someone twice or not at all wait for a second principal.
const defaultFourEyes = "resolve,redrive"

// fourEyesFlag is the -four-eyes flag: the actions that need a second
// principal's approval, comma-separated, or "none".
type fourEyesFlag dispatchrpc.FourEyes

func (f *fourEyesFlag) String() string {
	if f == nil {
		return ""
	}
	var names []string
	if f.Resolve {
		names = append(names, "resolve")
	}
	if f.Redrive {
		names = append(names, "redrive")
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// Set replaces the list: the default is not added to.
func (f *fourEyesFlag) Set(v string) error {
	f.Resolve, f.Redrive = false, false
	for name := range strings.SplitSeq(v, ",") {
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "resolve":
			f.Resolve = true
		case "redrive":
			f.Redrive = true
		case "none", "":
		default:
			return fmt.Errorf("action %q: want resolve, redrive, or none", strings.TrimSpace(name))
		}
	}
	return nil
}
