// Package stackenv loads the endpoints and credentials `make up` wrote to
// .spool/stack.env (the stack's CA as SPOOL_CA_FILE, an admin token as
// SPOOL_TOKEN), so that after starting the local stack a user can run
// `spool send` with no flags and no exported variables.
package stackenv

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Path is where `make up` writes the stack's environment, relative to the
// working directory.
const Path = ".spool/stack.env"

// Load reads KEY=value lines from path and sets every variable that lookup
// does not already find, so the real environment always wins. Blank lines
// and lines starting with # are skipped. A missing file is not an error.
func Load(path string, lookup func(string) (string, bool), set func(key, value string) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return fmt.Errorf("%s line %d: want KEY=value", path, n)
		}
		if _, set := lookup(key); set {
			continue
		}
		if err := set(key, unquote(strings.TrimSpace(value))); err != nil {
			return fmt.Errorf("%s line %d: set %s: %w", path, n, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// unquote strips one pair of matching quotes, as a shell would.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}
