// Command secretfiles writes secrets from its environment to files, for
// programs that read a certificate, a key or a policy from a file while the
// platform hands secrets over as environment variables. On ECS it runs as a
// task's first, non-essential container: the task definition's `secrets`
// inject the values (from Secrets Manager or the SSM Parameter Store) into
// it alone, it writes them to a volume the service's container mounts
// read-only, and exits; the service starts after it succeeded. The service's
// own environment never holds the secrets, and its image needs no shell.
//
//	secretfiles -dir /run/spool server.pem=SPOOL_TLS_CERT server-key.pem=SPOOL_TLS_KEY
//
// Each argument is FILE=VARIABLE: the variable's value is written to
// dir/FILE, readable by its owner only. An unset or empty variable is an
// error, and nothing is written until every variable was found.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "secretfiles:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("secretfiles", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "/run/spool", "folder to write the files in")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("name at least one FILE=VARIABLE")
	}
	type secret struct{ file, name, value string }
	var secrets []secret
	var errs []error
	for _, arg := range fs.Args() {
		file, name, ok := strings.Cut(arg, "=")
		switch {
		case !ok || file == "" || name == "":
			errs = append(errs, fmt.Errorf("%q: want FILE=VARIABLE", arg))
			continue
		case file != filepath.Base(file) || file == "." || file == "..":
			errs = append(errs, fmt.Errorf("%q: the file must be a plain name inside -dir", arg))
			continue
		}
		// The value itself never appears in an error.
		value, _ := lookup(name)
		if value == "" {
			errs = append(errs, fmt.Errorf("%s is not set or empty (for %s)", name, file))
			continue
		}
		secrets = append(secrets, secret{file: file, name: name, value: value})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range secrets {
		path := filepath.Join(*dir, s.file)
		if err := writePrivate(path, s.value); err != nil {
			return fmt.Errorf("write %s (from %s): %w", path, s.name, err)
		}
		fmt.Fprintf(stdout, "wrote %s from %s\n", path, s.name)
	}
	return nil
}

// writePrivate puts value in path, readable by its owner alone at every
// moment: it is written to a new file of mode 0600 beside path, then
// renamed over it. Writing path itself would keep the mode of a file that
// was there already, so the new secret would be readable by others until
// a chmod after it.
func writePrivate(path, value string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename there is nothing to remove
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
