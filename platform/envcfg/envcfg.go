// Package envcfg parses command-line flags with environment variables as
// fallbacks, so the same binary is configured by flags on a laptop and by
// environment in an ECS task definition.
//
// Every flag -some-name falls back to the variable SPOOL_SOME_NAME. A flag
// given on the command line wins over the environment, which wins over the
// flag's default.
package envcfg

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Prefix is prepended to every derived environment variable name.
const Prefix = "SPOOL_"

// EnvName returns the environment variable that backs the flag name.
func EnvName(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Option changes how Parse treats some flags.
type Option func(*options)

type options struct {
	except map[string]bool
}

// Except leaves the named flags without an environment fallback. Per-call
// values, such as the key of one file, belong here: exported once in a
// shell, they would silently apply to every later call.
func Except(flagNames ...string) Option {
	return func(o *options) {
		for _, n := range flagNames {
			o.except[n] = true
		}
	}
}

// Parse parses args into fs, then fills every flag that was not given on the
// command line from its environment variable, when that is set. lookup is
// os.LookupEnv outside tests.
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool), opts ...Option) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	o := options{except: map[string]bool{}}
	for _, opt := range opts {
		opt(&o)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if o.except[f.Name] {
			return
		}
		// Say in -help where each value can also come from.
		if !strings.Contains(f.Usage, "$"+EnvName(f.Name)) {
			f.Usage = fmt.Sprintf("%s ($%s)", f.Usage, EnvName(f.Name))
		}
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] || o.except[f.Name] {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("environment %s=%q: %w", EnvName(f.Name), v, serr)
		}
	})
	return err
}
