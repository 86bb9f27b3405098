// Package progress shows a job's delivery (and a file's upload) while it
// runs: an animated bar when a person watches a terminal, and a plain line
// every few seconds when the output goes to a log or a CI job, where an
// animation would be noise.
package progress

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// Job displays a job's progress.
type Job interface {
	// Update shows p.
	Update(p *spoolv1.JobProgress)
	// Note prints a line of text without breaking the display.
	Note(text string)
	// Stop ends the display; completed says whether the job completed.
	Stop(completed bool)
}

// Upload displays the bytes of a file sent so far.
type Upload interface {
	Sent(n int64)
	// Note prints a line of text, such as a resume, without breaking the
	// display.
	Note(text string)
	Stop(ok bool)
}

// Settled returns the rows settled (delivered or failed) and the rows the
// job is known to have: its total once sealed, the rows published so far
// while the file is still being received.
func Settled(j *spoolv1.Job) (settled, of int64) {
	settled = j.GetDelivered() + j.GetFailed() + j.GetDuplicateRows() + j.GetDeadLettered()
	of = j.GetTotal()
	if j.GetState() == spoolv1.JobState_JOB_STATE_RECEIVING || of == 0 {
		of = max(of, j.GetRowsPublished())
	}
	return settled, of
}

// State names a job state without its enum prefix, e.g. COMPLETED.
func State(s spoolv1.JobState) string {
	return strings.TrimPrefix(s.String(), "JOB_STATE_")
}

// ShortID shortens a job id for a bar's label.
func ShortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// Rate formats a rows-per-second figure.
func Rate(r float64) string {
	if r >= 100 {
		return fmt.Sprintf("%.0f rows/s", r)
	}
	return fmt.Sprintf("%.1f rows/s", r)
}

// ETA formats p's estimate, "ETA ?" when the dispatchers have none, and
// nothing once the job has ended.
func ETA(p *spoolv1.JobProgress) string {
	if p.GetFinal() {
		return ""
	}
	if p.GetEta() == nil {
		return "ETA ?"
	}
	return "ETA " + p.GetEta().AsDuration().Round(time.Second).String()
}

func percent(n, of int64) float64 {
	if of <= 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// Lines prints a plain progress line at most every Every.
type Lines struct {
	w     io.Writer
	every time.Duration
	now   func() time.Time
	last  time.Time
}

// NewLines returns a plain display that writes to w at most once per
// every; now is time.Now outside tests.
func NewLines(w io.Writer, every time.Duration, now func() time.Time) *Lines {
	return &Lines{w: w, every: every, now: now}
}

// due reports whether a line may be printed now, and notes it.
func (l *Lines) due() bool {
	t := l.now()
	if !l.last.IsZero() && t.Sub(l.last) < l.every {
		return false
	}
	l.last = t
	return true
}

// Held says why a job that is not over delivers nothing, or only part of
// itself, at now: its pause with the reason, its payment date, its
// canary; "" when nothing holds it.
func Held(j *spoolv1.Job, now time.Time) string {
	if s := j.GetState(); s != spoolv1.JobState_JOB_STATE_RECEIVING && s != spoolv1.JobState_JOB_STATE_SEALED {
		return ""
	}
	var parts []string
	if j.GetPaused() {
		r := j.GetPauseReason()
		if r == "" {
			r = "by an operator"
		}
		parts = append(parts, "paused: "+r)
	}
	if d := j.GetDeliverAfter(); d != nil && d.AsTime().After(now) {
		parts = append(parts, "waiting until "+d.AsTime().UTC().Format(time.RFC3339)+" (deliver-after)")
	}
	if c := j.GetCanary(); c.GetRows() > 0 && !c.GetReleased() && !j.GetPaused() {
		parts = append(parts, fmt.Sprintf("canary: first %d rows only", c.GetRows()))
	}
	return strings.Join(parts, "; ")
}

// Update implements Job.
func (l *Lines) Update(p *spoolv1.JobProgress) {
	// The final message always prints: it is the one people look for.
	if !l.due() && !p.GetFinal() {
		return
	}
	j := p.GetJob()
	settled, of := Settled(j)
	line := fmt.Sprintf("job %s: %s, %d of %d rows settled (%.1f%%), %s",
		j.GetJobId(), State(j.GetState()), settled, of, percent(settled, of), Rate(p.GetRatePerSecond()))
	if eta := ETA(p); eta != "" {
		line += ", " + eta
	}
	if held := Held(j, l.now()); held != "" {
		line += ", " + held
	}
	fmt.Fprintln(l.w, line)
}

// Note implements Job.
func (l *Lines) Note(text string) { fmt.Fprintln(l.w, text) }

// Stop implements Job and Upload.
func (l *Lines) Stop(bool) {}

// UploadLines is a plain Upload display that knows the file's size.
type UploadLines struct {
	*Lines
	size int64
}

// NewUploadLines returns a plain upload display; size is 0 when unknown.
func NewUploadLines(w io.Writer, size int64, every time.Duration, now func() time.Time) *UploadLines {
	return &UploadLines{Lines: NewLines(w, every, now), size: size}
}

// Sent implements Upload.
func (u *UploadLines) Sent(n int64) {
	switch {
	case !u.due():
	case u.size <= 0:
		fmt.Fprintf(u.w, "sent %s\n", bytesText(n))
	default:
		fmt.Fprintf(u.w, "sent %s of %s (%.0f%%)\n", bytesText(n), bytesText(u.size), percent(n, u.size))
	}
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Bar is the animated terminal display of a job.
type Bar struct {
	p    *mpb.Progress
	bar  *mpb.Bar
	last atomic.Pointer[spoolv1.JobProgress]
}

// NewBar starts an animated bar for jobID on w. opts are extra container
// options (tests force rendering to a buffer).
func NewBar(ctx context.Context, w io.Writer, jobID string, opts ...mpb.ContainerOption) *Bar {
	b := &Bar{p: mpb.NewWithContext(ctx, append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithWidth(100)}, opts...)...)}
	// The rate and ETA come from the dispatchers, which see every
	// dispatcher's deliveries; a local estimate would see only updates.
	text := func(f func(*spoolv1.JobProgress) string) decor.Decorator {
		return decor.Any(func(decor.Statistics) string {
			if p := b.last.Load(); p != nil {
				return f(p)
			}
			return ""
		})
	}
	// Created with total 0 the bar never completes by itself: the total
	// grows while the file is received, and only Stop decides the end.
	b.bar = b.p.New(0, mpb.BarStyle(),
		mpb.PrependDecorators(
			decor.Name("job "+ShortID(jobID)+" "),
			text(func(p *spoolv1.JobProgress) string { return State(p.GetJob().GetState()) + " " }),
			decor.CountersNoUnit("%d / %d"),
		),
		mpb.AppendDecorators(
			decor.Percentage(decor.WC{W: 6}),
			text(func(p *spoolv1.JobProgress) string { return "  " + Rate(p.GetRatePerSecond()) }),
			text(func(p *spoolv1.JobProgress) string { return "  " + ETA(p) }),
			text(func(p *spoolv1.JobProgress) string {
				if held := Held(p.GetJob(), time.Now()); held != "" {
					return "  " + held
				}
				return ""
			}),
		),
	)
	return b
}

// Update implements Job.
func (b *Bar) Update(p *spoolv1.JobProgress) {
	b.last.Store(p)
	settled, of := Settled(p.GetJob())
	b.bar.SetTotal(of, false)
	b.bar.SetCurrent(settled)
}

// Note implements Job: the line is printed above the bar.
func (b *Bar) Note(text string) { _, _ = fmt.Fprintln(b.p, text) }

// Stop implements Job. It returns once the bar's last frame is drawn.
func (b *Bar) Stop(completed bool) { finish(b.p, b.bar, completed) }

// finish ends bar: full when ok, else aborted where it stands, and returns
// once p has drawn its last frame.
func finish(p *mpb.Progress, bar *mpb.Bar, ok bool) {
	if ok {
		bar.SetTotal(-1, true)
	} else {
		bar.Abort(false)
	}
	p.Wait()
}

// UploadBar is the animated terminal display of an upload.
type UploadBar struct {
	p   *mpb.Progress
	bar *mpb.Bar
}

// NewUploadBar starts an animated upload bar on w; size is 0 when unknown.
func NewUploadBar(ctx context.Context, w io.Writer, name string, size int64, opts ...mpb.ContainerOption) *UploadBar {
	u := &UploadBar{p: mpb.NewWithContext(ctx, append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithWidth(100)}, opts...)...)}
	u.bar = u.p.New(0, mpb.BarStyle(),
		mpb.PrependDecorators(decor.Name("send "+name+" "), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), "  % .1f")),
	)
	if size > 0 {
		u.bar.SetTotal(size, false)
	}
	return u
}

// Sent implements Upload.
func (u *UploadBar) Sent(n int64) { u.bar.SetCurrent(n) }

// Note implements Upload: the line is printed above the bar.
func (u *UploadBar) Note(text string) { _, _ = fmt.Fprintln(u.p, text) }

// Stop implements Upload.
func (u *UploadBar) Stop(ok bool) { finish(u.p, u.bar, ok) }
