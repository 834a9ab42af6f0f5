package kmeans

import "runtime"

const (
	minChunk  = 8192 // smallest chunk, in points (chunks are multiples of seedBlock)
	maxChunks = 64   // most chunks a pass is split into
)

// chunking splits n points into chunks whose boundaries depend on n only, so
// that chunk-ordered reductions do not depend on the number of goroutines.
type chunking struct {
	n, size, count int
}

func newChunking(n int) chunking {
	size := (n + maxChunks - 1) / maxChunks
	if size < minChunk {
		size = minChunk
	}
	size = (size + seedBlock - 1) / seedBlock * seedBlock
	count := (n + size - 1) / size
	if count == 0 {
		count = 1
	}
	return chunking{n: n, size: size, count: count}
}

// bounds returns the half-open point range of chunk c.
func (ch chunking) bounds(c int) (lo, hi int) {
	lo = c * ch.size
	hi = min(lo+ch.size, ch.n)
	return lo, hi
}

// resolveWorkers maps Options.Workers to the thread limit of
// kernels.ParallelFor (which also caps it at kernels.Threads()).
func resolveWorkers(w int) int {
	if w <= 0 {
		w = runtime.GOMAXPROCS(0)
	}
	return max(w, 1)
}
