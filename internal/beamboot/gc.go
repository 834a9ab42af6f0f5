package beamboot

import (
	"flag"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
)

// WorkerGCPercent is the garbage collector's target in a Beam worker
// process: collect when the heap has grown by half its live size since
// the last collection, rather than Go's default of doubling it.
//
// Why: a worker's live heap is flat with the data (bench/memory.sh), but
// with the default target its peak RSS is the live heap plus as much
// garbage again, and where that garbage peaks depends on when the
// collections happen to fall: from 50,000 to 200,000 images the probe and
// probe-baselines workers' peaks rose 14% with live heaps of 70–74 MiB in
// both, and 8% with this target (docs/memory.md). A launcher keeps Go's
// default except while it runs a job's workers itself (InProcessWorkerGC);
// GOGC in the environment overrides this, as it would anywhere.
const WorkerGCPercent = 50

// TuneWorkerGC sets the collector's target of a process started in Beam
// worker mode (--worker=true: by igpt's worker pool, by Dataflow's boot
// program) to WorkerGCPercent, unless GOGC is set. Call it after the
// flags are parsed and before beam.Init. It returns the target it set, or
// 0 when it left the collector alone.
func TuneWorkerGC() int {
	p := workerGCPercent(isWorker(), os.Getenv("GOGC"))
	if p > 0 {
		debug.SetGCPercent(p)
		slog.Debug("beam worker garbage collector", "gc_percent", p)
	}
	return p
}

// isWorker reports whether the harness's --worker flag is set.
func isWorker() bool {
	f := flag.Lookup("worker")
	if f == nil {
		return false
	}
	w, _ := strconv.ParseBool(f.Value.String())
	return w
}

// workerGCPercent is the collector target for a process (0: leave it):
// WorkerGCPercent in a worker whose environment does not set GOGC.
func workerGCPercent(worker bool, gogc string) int {
	if !worker || gogc != "" {
		return 0
	}
	return WorkerGCPercent
}

// inProcessGC counts the Beam jobs whose workers run in this process.
var inProcessGC struct {
	sync.Mutex
	jobs int
	prev int // the target before the first of them
}

// InProcessWorkerGC sets this process's collector target to
// WorkerGCPercent while it hosts Beam workers itself (prism's in-process
// pool: the launcher is then its own worker, and its peak is a worker's),
// unless GOGC is set; restore puts the previous target back once the last
// such job has ended. Jobs may overlap (tests, concurrent stages): the
// target is set by the first and restored by the last.
func InProcessWorkerGC() (restore func()) {
	if workerGCPercent(true, os.Getenv("GOGC")) == 0 {
		return func() {}
	}
	inProcessGC.Lock()
	if inProcessGC.jobs == 0 {
		inProcessGC.prev = debug.SetGCPercent(WorkerGCPercent)
	}
	inProcessGC.jobs++
	inProcessGC.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			inProcessGC.Lock()
			defer inProcessGC.Unlock()
			if inProcessGC.jobs--; inProcessGC.jobs == 0 {
				debug.SetGCPercent(inProcessGC.prev)
			}
		})
	}
}
