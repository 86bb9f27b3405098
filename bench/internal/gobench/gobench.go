// Package gobench runs a Go benchmark of another module and reads the
// metrics it reported, so figures measured by existing benchmarks (the
// ingestor's memory, the ledger's cost) join the one table.
package gobench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
)

// Run runs `go test -run '^$' -bench pattern -benchtime benchtime [-short]
// pkg` in dir and returns the metrics of the benchmark's result line, by
// unit ("rss-ratio", "ledger/put", "ns/op"). Its output is copied to log.
func Run(ctx context.Context, dir, pkg, pattern, benchtime string, short bool, log io.Writer) (map[string]float64, error) {
	args := []string{"test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-timeout", "40m"}
	if short {
		args = append(args, "-short")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, log)
	cmd.Stderr = log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("benchmark %s in %s: %w", pattern, dir, err)
	}
	m, err := Parse(&out)
	if err != nil {
		return nil, fmt.Errorf("benchmark %s in %s: %w", pattern, dir, err)
	}
	return m, nil
}

// Parse reads the metrics of the benchmark result lines in r: after the
// name and the iteration count, pairs of value and unit. Later lines
// overwrite earlier ones' units.
func Parse(r io.Reader) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("metric %q of %s: %w", f[i+1], f[0], err)
			}
			m[f[i+1]] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no benchmark result line")
	}
	return m, nil
}
