package kmeans

import (
	"fmt"
	"math"

	"github.com/igpt/igpt/internal/kernels"
)

// Float is the element type of input points.
type Float interface{ ~float32 | ~float64 }

// Nearest returns, for every point of x (shape [N, D]), the index of its
// nearest centre (centres: shape [K, D]) and the squared distance to it.
// The search is exact brute force in float64 (x converted exactly), with
// ties going to the lowest centre index; it runs on GOMAXPROCS goroutines.
func Nearest[T Float](x []T, d int, centres []float64) (labels []int32, dist2 []float64, err error) {
	n, k, err := checkShapes(len(x), d, len(centres))
	if err != nil {
		return nil, nil, fmt.Errorf("kmeans: nearest: %w", err)
	}
	labels = make([]int32, n)
	dist2 = make([]float64, n)
	ch := newChunking(n)
	kernels.ParallelFor(ch.count, resolveWorkers(0), kernels.Func(func(c, _ int) {
		lo, hi := ch.bounds(c)
		xf := make([]float64, d)
		for i := lo; i < hi; i++ {
			for t := range xf {
				xf[t] = float64(x[i*d+t])
			}
			j, dd := nearestOne(xf, centres, k, d)
			labels[i], dist2[i] = int32(j), dd
		}
	}))
	return labels, dist2, nil
}

// checkShapes validates flat [N, D] points and [K, D] centres.
func checkShapes(nx, d, nc int) (n, k int, err error) {
	if d <= 0 {
		return 0, 0, fmt.Errorf("dimension %d, want > 0", d)
	}
	if nx%d != 0 {
		return 0, 0, fmt.Errorf("%d point values are not a whole number of %d-dimensional points", nx, d)
	}
	if nc == 0 || nc%d != 0 {
		return 0, 0, fmt.Errorf("%d centre values are not a positive whole number of %d-dimensional centres", nc, d)
	}
	if nc/d > math.MaxInt32 {
		return 0, 0, fmt.Errorf("%d centres, want at most %d", nc/d, math.MaxInt32)
	}
	return nx / d, nc / d, nil
}

// checkWeights validates optional weights: nil, or n finite values >= 0.
func checkWeights(w []float64, n int) error {
	if w == nil {
		return nil
	}
	if len(w) != n {
		return fmt.Errorf("%d weights for %d points", len(w), n)
	}
	for i, v := range w {
		if !(v >= 0) || math.IsInf(v, 1) {
			return fmt.Errorf("weight %d is %v, want finite and >= 0", i, v)
		}
	}
	return nil
}

// weight returns w[i], or 1 when w is nil.
func weight(w []float64, i int) float64 {
	if w == nil {
		return 1
	}
	return w[i]
}

// Flatten3 converts RGB centres to the flat float64 layout [K, 3].
func Flatten3(c [][3]float32) []float64 {
	out := make([]float64, 3*len(c))
	for j, v := range c {
		out[3*j], out[3*j+1], out[3*j+2] = float64(v[0]), float64(v[1]), float64(v[2])
	}
	return out
}

// Unflatten3 converts flat centres of shape [K, 3] to RGB triples, rounding
// to float32.
func Unflatten3(c []float64) [][3]float32 {
	out := make([][3]float32, len(c)/3)
	for j := range out {
		out[j] = [3]float32{float32(c[3*j]), float32(c[3*j+1]), float32(c[3*j+2])}
	}
	return out
}
