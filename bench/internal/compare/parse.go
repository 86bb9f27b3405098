package compare

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// e2eLine is what TestLargeFileThreeDispatchers logs once the file is
// through: its rows and the time from `spool send` to the job's end.
var e2eLine = regexp.MustCompile(`(\d+) rows through 3 dispatchers in (\S+)`)

// E2ETime reads the time TestLargeFileThreeDispatchers logged (go test -v
// output) for rows rows. A run that logged no time, or the time of another
// size, is an error: comparing it would compare nothing.
func E2ETime(r io.Reader, rows int) (time.Duration, error) {
	sc := bufio.NewScanner(r)
	var found []string
	for sc.Scan() {
		m := e2eLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		found = append(found, strings.TrimSpace(m[0]))
		n, err := strconv.Atoi(m[1])
		if err != nil || n != rows {
			continue
		}
		d, err := time.ParseDuration(m[2])
		if err != nil {
			return 0, fmt.Errorf("e2e time %q: %w", m[2], err)
		}
		return d, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if len(found) > 0 {
		return 0, fmt.Errorf("no e2e time for %d rows (logged: %s)", rows, strings.Join(found, "; "))
	}
	return 0, fmt.Errorf("no line %q in the e2e output", "N rows through 3 dispatchers in T")
}

// Metric is the benchmark metric name from metrics (as gobench.Parse
// returns them), or an error that lists what the benchmark did report, so
// that a metric renamed on one side fails the comparison instead of
// comparing a zero.
func Metric(metrics map[string]float64, name string) (float64, error) {
	v, ok := metrics[name]
	if !ok {
		return 0, fmt.Errorf("no metric %q (reported: %s)", name, strings.Join(slices.Sorted(maps.Keys(metrics)), ", "))
	}
	return v, nil
}
