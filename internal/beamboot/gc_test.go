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
