package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// The worker pool: one persistent goroutine per extra thread, started once
// and reused by every parallel kernel (no goroutine per call or tile). A
// parallel call hands out tasks 0..n-1 through an atomic counter; the
// calling goroutine works as worker 0, so a pool of p threads runs p-1
// goroutines. Up to p-1 workers join a call by taking a ticket; when the
// caller runs out of tasks it withdraws the tickets not taken, so a worker
// that is slow to wake (a busy machine) never delays the call. Between calls the workers spin briefly on the job counter
// (back-to-back kernels start in well under a microsecond) and then park
// on a channel.
//
// Calls are serialised by a mutex: kernels called from several goroutines
// at once queue up rather than oversubscribe the cores. Kernel code never
// calls a parallel entry point from inside a task (tasks use the sequential
// internals), so the pool cannot deadlock on itself.
//
// ParallelFor opens the pool to the rest of igpt (k-means passes, the
// Sampler's attention step): one parallel-for, with the same worker
// goroutines, queueing and wake-up path as the kernels. Worker indices are
// dense per call: a call that uses u threads numbers them 0..u-1 (the
// caller is 0, a joining worker gets the ticket it took), so per-worker
// scratch sized by the thread limit is enough.

// job is one parallel operation; implementations are long-lived structs
// (package variables), so passing them as interfaces does not allocate.
type job interface {
	// run executes task t on worker w (0 <= w < threads); scratch for w is
	// workers[w].
	run(t, w int)
}

// Job is one parallel operation of ParallelFor: Run(task, worker) runs
// task on worker, 0 <= worker < the threads the call uses. A Job that is a
// pointer to a long-lived struct is passed without allocating.
type Job interface {
	Run(task, worker int)
}

// Func adapts a function to a Job (a closure that escapes to the heap, so
// one allocation per call: fine outside the per-step hot paths).
type Func func(task, worker int)

// Run calls f(task, worker).
func (f Func) Run(task, worker int) { f(task, worker) }

// extJob carries a caller's Job through the pool's internal job interface.
type extJob struct{ j Job }

func (e *extJob) run(t, w int) { e.j.Run(t, w) }

// ParallelFor runs tasks 0..n-1 of j on up to min(Threads(), limit, n)
// threads, the caller included (limit <= 0: no limit beyond Threads()),
// and returns when all are done. Tasks are claimed dynamically, so j must
// write only to per-task storage or to per-worker storage indexed by the
// worker argument. j must not call ParallelFor or a parallel kernel: calls
// queue on one mutex.
func ParallelFor(n, limit int, j Job) {
	p := thePool
	p.mu.Lock()
	p.ext.j = j
	p.runLimited(n, limit, &p.ext)
	p.ext.j = nil
	p.mu.Unlock()
}

// worker holds the per-thread scratch of the kernels, reused across calls.
type worker struct {
	ws workspace

	gen  atomic.Uint64 // last job generation this worker has taken
	park atomic.Int32  // 1 while parked (or about to park) on wake
	wake chan struct{}
	_    [64]byte // keep workers' hot fields on separate cache lines
}

type pool struct {
	mu      sync.Mutex
	threads int // threads used by parallel calls (<= len(workers))
	workers []*worker

	// state<<16 is the job generation, bumped per parallel call.
	state atomic.Uint64
	// tickets is the number of workers that may still join the current
	// job (Threads()-1 at its start).
	tickets atomic.Int64
	job     job
	tasks   int
	next    atomic.Int64 // next task to hand out
	done    atomic.Int64 // workers finished with the current job
	_       [64]byte
	spinN   int
	ext     extJob // ParallelFor's job
}

var thePool = newPool(runtime.GOMAXPROCS(0))

func newPool(threads int) *pool {
	if threads < 1 {
		threads = 1
	}
	p := &pool{spinN: 1 << 15}
	p.grow(threads)
	p.threads = threads
	return p
}

// grow starts workers up to n (caller holds mu or is newPool).
func (p *pool) grow(n int) {
	for len(p.workers) < n {
		w := &worker{wake: make(chan struct{}, 1)}
		id := len(p.workers)
		p.workers = append(p.workers, w)
		if id > 0 {
			w.gen.Store(p.state.Load() >> 16)
			go p.loop(w)
		}
	}
}

// SetThreads sets the number of threads the kernels use (at least 1) and
// returns the previous value. The default is GOMAXPROCS at start-up.
func SetThreads(n int) int {
	if n < 1 {
		n = 1
	}
	p := thePool
	p.mu.Lock()
	old := p.threads
	p.grow(n)
	p.threads = n
	p.mu.Unlock()
	return old
}

// Threads returns the number of threads the kernels use.
func Threads() int {
	p := thePool
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.threads
}

func (p *pool) loop(w *worker) {
	for {
		// wait for a new generation: spin, then park.
		my := w.gen.Load()
		spins := 0
		for p.state.Load()>>16 == my {
			spins++
			if spins > p.spinN {
				w.park.Store(1)
				if p.state.Load()>>16 != my {
					if w.park.CompareAndSwap(1, 0) {
						break
					}
					<-w.wake // the dispatcher claimed us and sends a wake-up
					break
				}
				<-w.wake
				break
			}
			if spins&63 == 0 {
				runtime.Gosched()
			}
		}
		w.gen.Store(p.state.Load() >> 16)
		// Take part only with a ticket: a worker that comes late (the
		// dispatcher has finished and withdrawn the tickets) does nothing.
		for {
			t := p.tickets.Load()
			if t <= 0 {
				break
			}
			if p.tickets.CompareAndSwap(t, t-1) {
				p.work(int(t)) // dense index: tickets count down from used-1
				p.done.Add(1)
				break
			}
		}
	}
}

func (p *pool) work(w int) {
	j := p.job
	for {
		t := int(p.next.Add(1) - 1)
		if t >= p.tasks {
			return
		}
		j.run(t, w)
	}
}

// runLocked runs tasks 0..n-1 of j on up to Threads() workers (the caller
// included) and returns when all are done; with one thread or one task it
// runs them inline. The caller holds p.mu.
func (p *pool) runLocked(n int, j job) { p.runLimited(n, 0, j) }

// runLimited is runLocked on at most limit threads (limit <= 0: no limit).
func (p *pool) runLimited(n, limit int, j job) {
	if n <= 0 {
		return
	}
	used := p.threads
	if limit > 0 && used > limit {
		used = limit
	}
	if used > n {
		used = n
	}
	if used <= 1 {
		for t := 0; t < n; t++ {
			j.run(t, 0)
		}
		return
	}
	p.job = j
	p.tasks = n
	p.next.Store(0)
	p.done.Store(0)
	p.tickets.Store(int64(used - 1))
	p.state.Store((p.state.Load()>>16 + 1) << 16)
	for i := 1; i < used; i++ {
		w := p.workers[i]
		if w.park.CompareAndSwap(1, 0) {
			w.wake <- struct{}{}
		}
	}
	p.work(0)
	// wait for the workers that took a ticket; withdraw the others'.
	joined := int64(used-1) - p.tickets.Swap(0)
	spins := 0
	for p.done.Load() != joined {
		spins++
		if spins&63 == 0 {
			runtime.Gosched()
		}
	}
	p.job = nil
}
