// Package progress owns igpt's progress reporting for long loops (train
// steps, probe feature extraction, probe fits): a bar redrawn in place when
// standard error is a terminal, and otherwise a log line with the count,
// the percentage and the estimated time left, at most every Interval and at
// every tenth of the work, so that CI logs and log files show progress too.
//
// A Bar is safe for concurrent use: Beam DoFns running in this process may
// advance a bar the driver started, found by name with Add.
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Interval is the longest time between two log lines of a bar that is not
// drawn on a terminal.
var Interval = 30 * time.Second

// Names of the bars that code outside the stage that started them advances.
const (
	ProbeFeatures = "probe: features"
)

// Bar reports the progress of one loop of known length.
type Bar struct {
	name  string
	total int64
	start time.Time
	now   func() time.Time

	mu        sync.Mutex
	done      int64
	startAt   int64 // done when the bar started (a resumed loop): ETA counts only what this run did
	lastLog   time.Time
	lastDraw  time.Time
	lastTenth int64
	tty       io.Writer // nil: log lines
	log       *slog.Logger
	finished  bool
}

var (
	activeMu sync.Mutex
	active   = map[string]*Bar{}
	// stderrTTY is where bars are drawn, nil when standard error is not a
	// terminal; tests replace it.
	stderrTTY io.Writer = ttyOrNil(os.Stderr)
)

func ttyOrNil(f *os.File) io.Writer {
	if term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}

// Start begins a bar of total units, done of them already (a resumed loop),
// logging to log (nil: slog.Default()) when standard error is not a
// terminal. The bar is registered under name until Finish, so that Add can
// find it.
func Start(name string, done, total int64, log *slog.Logger) *Bar {
	if log == nil {
		log = slog.Default()
	}
	b := &Bar{name: name, total: total, now: time.Now, done: done, startAt: done, tty: stderrTTY, log: log}
	b.start = b.now()
	b.lastLog = b.start
	b.lastTenth = b.tenth(done)
	activeMu.Lock()
	active[name] = b
	activeMu.Unlock()
	return b
}

// Add advances the bar registered under name by n; it does nothing when no
// such bar is running in this process (a Beam worker in another process).
func Add(name string, n int64) {
	activeMu.Lock()
	b := active[name]
	activeMu.Unlock()
	if b != nil {
		b.Add(n)
	}
}

// Add advances the bar by n units.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	b.report(false)
}

// Set sets the number of units done.
func (b *Bar) Set(done int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = done
	b.report(false)
}

// Finish reports the final count once and unregisters the bar.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	activeMu.Lock()
	if active[b.name] == b {
		delete(active, b.name)
	}
	activeMu.Unlock()
	b.report(true)
	if b.tty != nil {
		fmt.Fprintln(b.tty)
	}
}

func (b *Bar) tenth(done int64) int64 {
	if b.total <= 0 {
		return 0
	}
	return done * 10 / b.total
}

// report draws or logs the bar when it is due; b.mu is held.
func (b *Bar) report(final bool) {
	now := b.now()
	if b.tty != nil {
		if final || now.Sub(b.lastDraw) >= 200*time.Millisecond {
			b.lastDraw = now
			fmt.Fprintf(b.tty, "\r\033[K%s", b.line(now, true))
		}
		return
	}
	t := b.tenth(b.done)
	if !final && t == b.lastTenth && now.Sub(b.lastLog) < Interval {
		return
	}
	b.lastTenth, b.lastLog = t, now
	args := []any{"done", b.done, "total", b.total}
	if b.total > 0 {
		args = append(args, "percent", fmt.Sprintf("%.0f", 100*float64(b.done)/float64(b.total)))
	}
	args = append(args, "elapsed", now.Sub(b.start).Round(time.Second))
	if eta, ok := b.eta(now); ok && !final {
		args = append(args, "eta", eta)
	}
	b.log.Info(b.name, args...)
}

// eta estimates the time left from this run's rate so far.
func (b *Bar) eta(now time.Time) (time.Duration, bool) {
	did := b.done - b.startAt
	el := now.Sub(b.start)
	if did <= 0 || b.total <= 0 || el <= 0 {
		return 0, false
	}
	left := float64(b.total-b.done) / float64(did) * float64(el)
	return time.Duration(max(left, 0)).Round(time.Second), true
}

// line is the bar as one line of text.
func (b *Bar) line(now time.Time, bar bool) string {
	var s strings.Builder
	s.WriteString(b.name)
	if bar && b.total > 0 {
		const width = 30
		n := int(min(max(b.done*width/b.total, 0), width))
		fmt.Fprintf(&s, " [%s%s]", strings.Repeat("=", n), strings.Repeat(" ", width-n))
	}
	fmt.Fprintf(&s, " %d/%d", b.done, b.total)
	if b.total > 0 {
		fmt.Fprintf(&s, " %3.0f%%", 100*float64(b.done)/float64(b.total))
	}
	fmt.Fprintf(&s, " %s", now.Sub(b.start).Round(time.Second))
	if eta, ok := b.eta(now); ok {
		fmt.Fprintf(&s, " (%s left)", eta)
	}
	return s.String()
}

// Writer wraps w (standard error, where logs go) so that a log line
// written while a bar is drawn on the terminal clears the bar first and
// redraws it after: log lines and the bar do not share a line.
func Writer(w io.Writer) io.Writer { return clearingWriter{w} }

type clearingWriter struct{ w io.Writer }

func (c clearingWriter) Write(p []byte) (int, error) {
	activeMu.Lock()
	var bars []*Bar
	for _, b := range active {
		if b.tty != nil {
			bars = append(bars, b)
		}
	}
	activeMu.Unlock()
	if len(bars) == 0 {
		return c.w.Write(p)
	}
	io.WriteString(c.w, "\r\033[K")
	n, err := c.w.Write(p)
	for _, b := range bars {
		b.mu.Lock()
		io.WriteString(c.w, "\r\033[K"+b.line(b.now(), true))
		b.mu.Unlock()
	}
	return n, err
}
