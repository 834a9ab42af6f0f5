package beamboot

import (
	"flag"
	"runtime/debug"
	"testing"
)

func TestWorkerGCPercent(t *testing.T) {
	for _, c := range []struct {
		name   string
		worker bool
		gogc   string
		want   int
	}{
		{"launcher", false, "", 0},
		{"worker", true, "", WorkerGCPercent},
		{"worker with GOGC", true, "200", 0},
		{"worker with GOGC off", true, "off", 0},
		{"launcher with GOGC", false, "30", 0},
	} {
		if got := workerGCPercent(c.worker, c.gogc); got != c.want {
			t.Errorf("%s: workerGCPercent(%v, %q) = %d, want %d", c.name, c.worker, c.gogc, got, c.want)
		}
	}
}

// TestTuneWorkerGC sets --worker as Dataflow's boot program does and
// checks that the collector's target changed, and only then.
func TestTuneWorkerGC(t *testing.T) {
	t.Setenv("GOGC", "")
	f := flag.Lookup("worker")
	if f == nil {
		flag.Bool("worker", false, "Beam worker mode (registered by the harness in igpt)")
		f = flag.Lookup("worker")
	}
	old := f.Value.String()
	defer f.Value.Set(old)
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	f.Value.Set("false")
	if p := TuneWorkerGC(); p != 0 {
		t.Fatalf("a launcher's collector was set to %d", p)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("a launcher's collector target is %d, want Go's 100", got)
	}
	f.Value.Set("true")
	if p := TuneWorkerGC(); p != WorkerGCPercent {
		t.Fatalf("TuneWorkerGC in a worker = %d, want %d", p, WorkerGCPercent)
	}
	if got := debug.SetGCPercent(100); got != WorkerGCPercent {
		t.Fatalf("a worker's collector target is %d, want %d", got, WorkerGCPercent)
	}
}

// TestInProcessWorkerGC: overlapping jobs set the worker target once and
// the last to end restores the launcher's; GOGC in the environment wins.
func TestInProcessWorkerGC(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	target := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }

	a := InProcessWorkerGC()
	if got := target(); got != WorkerGCPercent {
		t.Fatalf("during a job the target is %d, want %d", got, WorkerGCPercent)
	}
	b := InProcessWorkerGC()
	a()
	a() // a second call changes nothing
	if got := target(); got != WorkerGCPercent {
		t.Fatalf("with a job still running the target is %d, want %d", got, WorkerGCPercent)
	}
	b()
	if got := target(); got != 100 {
		t.Fatalf("after the last job the target is %d, want the launcher's 100", got)
	}
	t.Setenv("GOGC", "80")
	debug.SetGCPercent(80)
	InProcessWorkerGC()()
	c := InProcessWorkerGC()
	if got := target(); got != 80 {
		t.Fatalf("with GOGC=80 set a job changed the target to %d", got)
	}
	c()
}
