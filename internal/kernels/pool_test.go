package kernels

import (
	"sync/atomic"
	"testing"
)

// TestParallelFor checks that every task runs exactly once and that worker
// indices stay below the threads the call may use, for limits below, at and
// above the pool's threads.
func TestParallelFor(t *testing.T) {
	old := SetThreads(4)
	defer SetThreads(old)
	for _, tc := range []struct {
		name         string
		tasks, limit int
		maxWorker    int // worker indices must be < this
	}{
		{"none", 0, 0, 1},
		{"one task", 1, 0, 1},
		{"no limit", 1000, 0, 4},
		{"limit 2", 1000, 2, 2},
		{"limit 1", 100, 1, 1},
		{"limit above threads", 1000, 16, 4},
		{"fewer tasks than threads", 3, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := make([]atomic.Int32, tc.tasks)
			var bad atomic.Int32
			ParallelFor(tc.tasks, tc.limit, Func(func(task, w int) {
				runs[task].Add(1)
				if w < 0 || w >= tc.maxWorker {
					bad.Store(int32(w) + 1)
				}
			}))
			for i := range runs {
				if n := runs[i].Load(); n != 1 {
					t.Fatalf("task %d ran %d times, want 1", i, n)
				}
			}
			if w := bad.Load(); w != 0 {
				t.Fatalf("worker index %d, want < %d", w-1, tc.maxWorker)
			}
		})
	}
}
