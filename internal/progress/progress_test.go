package progress

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeClock advances by step on every reading.
func fakeClock(step time.Duration) func() time.Time {
	t := time.Unix(0, 0)
	return func() time.Time {
		t = t.Add(step)
		return t
	}
}

func logBar(t *testing.T, name string, done, total int64, step time.Duration) (*Bar, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	old := stderrTTY
	stderrTTY = nil
	t.Cleanup(func() { stderrTTY = old })
	b := Start(name, done, total, slog.New(slog.NewTextHandler(&buf, nil)))
	b.now = fakeClock(step)
	b.start, b.lastLog = time.Unix(0, 0), time.Unix(0, 0)
	t.Cleanup(b.Finish)
	return b, &buf
}

func TestLogLines(t *testing.T) {
	for _, tc := range []struct {
		name      string
		step      time.Duration // clock advance per reading
		adds      int
		wantLines int // before Finish
	}{
		{"fast: one line per tenth", time.Millisecond, 100, 10},
		{"slow: one line per Interval too", Interval * 6 / 10, 5, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, buf := logBar(t, "train", 0, 100, tc.step)
			for range tc.adds {
				b.Add(1)
			}
			if got := strings.Count(buf.String(), "\n"); got != tc.wantLines {
				t.Errorf("%d log lines, want %d:\n%s", got, tc.wantLines, buf)
			}
			b.Finish()
			last := buf.String()[strings.LastIndex(strings.TrimSuffix(buf.String(), "\n"), "\n")+1:]
			if !strings.Contains(last, "done="+strconv.Itoa(tc.adds)) || strings.Contains(last, "eta=") {
				t.Errorf("final line %q: want the count and no eta", last)
			}
		})
	}
}

func TestETACountsOnlyThisRun(t *testing.T) {
	// A loop resumed at 50 of 100 that did 10 more in 10 s has 40 left: 40 s.
	b, _ := logBar(t, "train", 50, 100, 0)
	b.start = time.Unix(0, 0)
	b.done = 60
	eta, ok := b.eta(time.Unix(10, 0))
	if !ok || eta != 40*time.Second {
		t.Errorf("eta = %v, %v; want 40s", eta, ok)
	}
	if _, ok := b.eta(b.start); ok {
		t.Error("eta with nothing done yet: want none")
	}
}

func TestAddByName(t *testing.T) {
	Add("nobody", 5) // no bar: nothing happens
	b, _ := logBar(t, ProbeFeatures, 0, 10, time.Millisecond)
	Add(ProbeFeatures, 4)
	if b.done != 4 {
		t.Errorf("done = %d after Add by name, want 4", b.done)
	}
	b.Finish()
	Add(ProbeFeatures, 4)
	if b.done != 4 {
		t.Errorf("done = %d after Finish, want 4 (unregistered)", b.done)
	}
}

func TestTerminalBarAndClearingWriter(t *testing.T) {
	var tty bytes.Buffer
	old := stderrTTY
	stderrTTY = &tty
	defer func() { stderrTTY = old }()
	b := Start("probe: fits", 0, 4, nil)
	b.now = fakeClock(time.Second)
	b.start = time.Unix(0, 0)
	b.Add(2)
	if !strings.Contains(tty.String(), "probe: fits [===============               ] 2/4  50%") {
		t.Errorf("bar drawn as %q", tty.String())
	}
	tty.Reset()
	w := Writer(&tty)
	w.Write([]byte("a log line\n"))
	if got := tty.String(); !strings.HasPrefix(got, "\r\033[Ka log line\n\r\033[Kprobe: fits") {
		t.Errorf("log line written as %q: want the bar cleared, the line, the bar redrawn", got)
	}
	b.Finish()
	tty.Reset()
	w.Write([]byte("after\n"))
	if tty.String() != "after\n" {
		t.Errorf("with no bar running, log line written as %q", tty.String())
	}
}
