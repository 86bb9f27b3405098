package top

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spoolhq/spool/cli/internal/progress"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// gap separates columns.
const gap = "  "

// Render returns the snapshot's lines, none wider than width runes; a
// width of 0 or less means no limit. When the columns do not fit, long
// job ids are shortened first, then the least telling columns are left
// out, and what still does not fit is cut.
func Render(s Snapshot, width int) []string {
	lines := []string{header(s)}
	lines = append(lines, dispatcherLines(s.Dispatchers, width)...)
	lines = append(lines, "")
	lines = append(lines, jobLines(s, width)...)
	for i, l := range lines {
		lines[i] = cut(l, width)
	}
	return lines
}

func header(s Snapshot) string {
	down := 0
	for _, d := range s.Dispatchers {
		if d.Err != nil {
			down++
		}
	}
	h := fmt.Sprintf("spool top  %s  %d %s", s.At.Format("15:04:05"), len(s.Dispatchers), plural(len(s.Dispatchers), "dispatcher"))
	if down > 0 {
		h += fmt.Sprintf(", %d unreachable", down)
	}
	return h
}

func dispatcherLines(ds []Dispatcher, width int) []string {
	cols := []*column{
		{title: "DISPATCHER"},
		{title: "ID", prio: 5},
		{title: "LIMIT", right: true},
		{title: "IN FLIGHT", right: true},
		{title: "RATE LIMIT", right: true, prio: 2},
		{title: "BREAKER"},
		{title: "OPENS", right: true, prio: 4},
		{title: "LATENCY NOW/BASE", prio: 3},
	}
	// An unreachable dispatcher's row is its address and its error: the
	// error gets the room of the other columns.
	var errs []string
	for _, d := range ds {
		if d.Err != nil {
			errs = append(errs, "unreachable: "+oneLine(dialNoise.ReplaceAllString(d.Err.Error(), "")))
			cols[0].add(d.Addr, "")
			for _, c := range cols[1:] {
				c.add("", "")
			}
			continue
		}
		errs = append(errs, "")
		f := d.Flow
		cells := []string{d.Addr, d.ID, "-", "-", "-", "-", "-", "-"}
		if f != nil {
			cells[2] = strconv.Itoa(int(f.GetConcurrencyLimit()))
			cells[3] = strconv.Itoa(int(f.GetInFlight()))
			cells[4] = rateLimit(f.GetRateLimit())
			cells[5] = breaker(f.GetBreakerState())
			cells[6] = strconv.FormatInt(f.GetBreakerOpens(), 10)
			cells[7] = duration(f.GetLatencyRecent().AsDuration()) + "/" + duration(f.GetLatencyBaseline().AsDuration())
		}
		for i, c := range cols {
			short := ""
			if i == 1 {
				short = progress.ShortID(cells[1])
			}
			c.add(cells[i], short)
		}
	}
	lines := layout(cols, width)
	for i, e := range errs {
		if e != "" {
			lines[i+1] = pad(ds[i].Addr, cols[0].width(), false) + gap + e
		}
	}
	return lines
}

func jobLines(s Snapshot, width int) []string {
	title := fmt.Sprintf("JOBS  %d open", s.Open)
	if s.JobsErr != nil {
		return []string{"JOBS  unavailable: " + oneLine(s.JobsErr.Error())}
	}
	if len(s.Jobs) == 0 {
		return []string{title}
	}
	cols := []*column{
		{title: "JOB"},
		{title: "STATE"},
		{title: "SETTLED", right: true},
		{title: "%", right: true, prio: 2},
		{title: "RATE", right: true, prio: 1},
		{title: "UNKNOWN", right: true, prio: 3},
		{title: "FAILED", right: true, prio: 3},
		{title: "DLQ", right: true, prio: 4},
		{title: "FILE", prio: 5},
	}
	for _, j := range s.Jobs {
		job := j.Job
		settled, of := progress.Settled(job)
		state := progress.State(job.GetState())
		if job.GetPaused() {
			state += " paused"
		}
		pct, rate := "-", "-"
		if of > 0 {
			pct = fmt.Sprintf("%.1f%%", 100*float64(settled)/float64(of))
		}
		if j.HasRate {
			rate = progress.Rate(j.Rate)
		}
		cells := []string{job.GetJobId(), state, fmt.Sprintf("%d/%d", settled, of), pct, rate,
			strconv.FormatInt(job.GetUnknown(), 10), strconv.FormatInt(job.GetFailed(), 10),
			strconv.FormatInt(job.GetDeadLettered(), 10), job.GetFileName()}
		for i, c := range cols {
			short := ""
			if i == 0 {
				short = progress.ShortID(cells[0])
			}
			c.add(cells[i], short)
		}
	}
	lines := append([]string{title}, layout(cols, width)...)
	if more := s.Open - len(s.Jobs); more > 0 {
		lines = append(lines, fmt.Sprintf("and %d more", more))
	}
	return lines
}

// column is one column of a table: its title and cells, and how readily
// it is given up when the table is too wide (higher prio goes first;
// 0 never).
type column struct {
	title string
	right bool
	prio  int
	cells []string
	// short holds each cell's shorter form, "" when it has none; a column
	// is shortened before any column is left out.
	short     []string
	shortened bool
	dropped   bool
}

func (c *column) add(cell, short string) {
	c.cells = append(c.cells, cell)
	c.short = append(c.short, short)
}

func (c *column) cell(i int) string {
	if c.shortened && c.short[i] != "" {
		return c.short[i]
	}
	return c.cells[i]
}

func (c *column) width() int {
	w := utf8.RuneCountInString(c.title)
	for i := range c.cells {
		w = max(w, utf8.RuneCountInString(c.cell(i)))
	}
	return w
}

// layout fits the columns to width and returns the title line and a line
// per row, without trailing blanks.
func layout(cols []*column, width int) []string {
	for width > 0 && tableWidth(cols) > width {
		if c := shortenable(cols); c != nil {
			c.shortened = true
			continue
		}
		c := droppable(cols)
		if c == nil {
			break
		}
		c.dropped = true
	}
	var kept []*column
	for _, c := range cols {
		if !c.dropped {
			kept = append(kept, c)
		}
	}
	n := len(cols[0].cells)
	lines := make([]string, 0, n+1)
	row := func(cell func(c *column) string) string {
		var b strings.Builder
		for i, c := range kept {
			if i > 0 {
				b.WriteString(gap)
			}
			b.WriteString(pad(cell(c), c.width(), c.right))
		}
		return strings.TrimRight(b.String(), " ")
	}
	lines = append(lines, row(func(c *column) string { return c.title }))
	for i := range n {
		lines = append(lines, row(func(c *column) string { return c.cell(i) }))
	}
	return lines
}

func tableWidth(cols []*column) int {
	w, n := 0, 0
	for _, c := range cols {
		if !c.dropped {
			w += c.width()
			n++
		}
	}
	return w + len(gap)*max(0, n-1)
}

func shortenable(cols []*column) *column {
	for _, c := range cols {
		if c.shortened || c.dropped {
			continue
		}
		for _, s := range c.short {
			if s != "" {
				return c
			}
		}
	}
	return nil
}

// droppable is the kept column given up first: the highest prio, the
// rightmost among equals.
func droppable(cols []*column) *column {
	var out *column
	for _, c := range cols {
		if !c.dropped && c.prio > 0 && (out == nil || c.prio >= out.prio) {
			out = c
		}
	}
	return out
}

func pad(s string, w int, right bool) string {
	n := w - utf8.RuneCountInString(s)
	if n <= 0 {
		return s
	}
	if right {
		return strings.Repeat(" ", n) + s
	}
	return s + strings.Repeat(" ", n)
}

// cut shortens s to width runes, ending it with "…" when something was
// cut; width 0 or less means no limit.
func cut(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

// dialNoise is the wording gRPC wraps a failed dial in, and the address
// the row already shows; without them the cause (connection refused, no
// such host) fits a narrow terminal.
var dialNoise = regexp.MustCompile(`connection error: desc = "transport: Error while dialing: (dial \w+ \S+: )?|"$`)

// oneLine folds a multi-line error (rpcerr lists field violations on
// lines of their own) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func rateLimit(r float64) string {
	if r <= 0 {
		return "off"
	}
	return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
}

func breaker(s spoolv1.BreakerState) string {
	switch s {
	case spoolv1.BreakerState_BREAKER_STATE_CLOSED:
		return "closed"
	case spoolv1.BreakerState_BREAKER_STATE_OPEN:
		return "OPEN"
	case spoolv1.BreakerState_BREAKER_STATE_HALF_OPEN:
		return "half-open"
	default:
		return "-"
	}
}

// duration formats a latency to a useful precision, "-" when unknown.
func duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
