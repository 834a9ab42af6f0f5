package kmeans

import (
	"fmt"
	"github.com/igpt/igpt/internal/kernels"
	"math"
	"math/rand/v2"
)

// localTrials is scikit-learn's default number of candidates per k-means++
// step: 2 + floor(ln k).
func localTrials(k, opt int) int {
	if opt > 0 {
		return opt
	}
	return 2 + int(math.Log(float64(k)))
}

// newRNG is the seeded generator used by seeding.
func newRNG(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
}

// seedBlock is the number of consecutive points that share a bounding box
// in SeedPlusPlus; chunk sizes are multiples of it.
const seedBlock = 256

// SeedPlusPlus picks opt.K initial centres from x (shape [N, D], weights w of
// shape [N] or nil) by greedy weighted k-means++, as scikit-learn does: the
// first centre is drawn with probability proportional to weight; each next
// one is the best (lowest resulting potential) of opt.LocalTrials candidates
// (default 2+ln K), each drawn with probability proportional to
// weight × squared distance to the nearest centre so far. Points of weight 0
// are never chosen. The result (shape [K, D]) depends only on the data, K,
// LocalTrials and Seed, not on Workers or GOMAXPROCS. It fails when fewer
// than K distinct points have positive weight.
//
// Speed: points are grouped in blocks of 256 consecutive points with a
// bounding box and the largest squared distance of any of them to its
// nearest centre; a block whose box is farther than that from a candidate
// cannot gain from it, and its cached potential is used instead. This is
// exact (the sums are the very same float64 operations as without the
// shortcut) and pays off when nearby points are stored together, as in a
// Histogram's colours, which are sorted.
func SeedPlusPlus[T Float](x []T, d int, w []float64, opt Options) ([]float64, error) {
	k := opt.K
	if d <= 0 || len(x)%d != 0 {
		return nil, fmt.Errorf("kmeans: seeding: %d values are not a whole number of %d-dimensional points", len(x), d)
	}
	n := len(x) / d
	if k <= 0 {
		return nil, fmt.Errorf("kmeans: seeding: k = %d, want > 0", k)
	}
	if err := checkWeights(w, n); err != nil {
		return nil, fmt.Errorf("kmeans: seeding: %w", err)
	}
	if k > n {
		return nil, fmt.Errorf("kmeans: seeding: k = %d exceeds the %d points", k, n)
	}
	trials := localTrials(k, opt.LocalTrials)
	workers := resolveWorkers(opt.Workers)
	rng := newRNG(opt.Seed)
	ch := newChunking(n)
	nb := (n + seedBlock - 1) / seedBlock

	closest := make([]float64, n)      // [N] squared distance to the nearest chosen centre
	box := make([]float64, 2*nb*d)     // [blocks, 2, D] per block: min corner, max corner
	bPot := make([]float64, nb)        // [blocks] sum of weight × closest over the block
	bMax := make([]float64, nb)        // [blocks] largest closest in the block
	centres := make([]float64, 0, k*d) // [k, D], growing
	cand := make([]float64, trials*d)  // [trials, D]
	candPot := make([]float64, ch.count*trials)

	// blocks returns the blocks of chunk c (chunk sizes are multiples of
	// seedBlock).
	blocks := func(c int) (b0, b1 int) {
		lo, hi := ch.bounds(c)
		return lo / seedBlock, (hi + seedBlock - 1) / seedBlock
	}
	blockRange := func(b int) (lo, hi int) { return b * seedBlock, min((b+1)*seedBlock, n) }
	// far reports whether every point of block b is certainly farther from
	// c (shape [D]) than from its nearest centre.
	far := func(b int, c []float64) bool {
		lo, hi := box[2*b*d:(2*b+1)*d], box[(2*b+1)*d:(2*b+2)*d]
		var s float64
		for t, v := range c {
			e := max(lo[t]-v, v-hi[t], 0)
			s += e * e
		}
		return s > bMax[b]*(1+1e-9)
	}

	// Boxes and weights; first centre with probability proportional to weight.
	kernels.ParallelFor(ch.count, workers, kernels.Func(func(c, _ int) {
		b0, b1 := blocks(c)
		for b := b0; b < b1; b++ {
			lo, hi := blockRange(b)
			bmin, bmax := box[2*b*d:(2*b+1)*d], box[(2*b+1)*d:(2*b+2)*d]
			var mass float64
			for i := lo; i < hi; i++ {
				for t, v := range x[i*d : (i+1)*d] {
					f := float64(v)
					if i == lo || f < bmin[t] {
						bmin[t] = f
					}
					if i == lo || f > bmax[t] {
						bmax[t] = f
					}
				}
				mass += weight(w, i)
			}
			bPot[b] = mass
		}
	}))
	total := sumOrdered(bPot)
	if !(total > 0) {
		return nil, fmt.Errorf("kmeans: seeding: total weight is %v, want > 0", total)
	}
	first := sampleBlocks(rng.Float64()*total, bPot, n, func(i int) float64 { return weight(w, i) })
	centres = appendPoint(centres, x, d, first)

	// update folds centre cj (shape [D]) into closest, bPot and bMax; first
	// marks the first centre, before which nothing was chosen.
	update := func(cj []float64, first bool) {
		kernels.ParallelFor(ch.count, workers, kernels.Func(func(c, _ int) {
			b0, b1 := blocks(c)
			for b := b0; b < b1; b++ {
				if !first && far(b, cj) {
					continue // no point of the block gets closer
				}
				lo, hi := blockRange(b)
				var pot, mx float64
				for i := lo; i < hi; i++ {
					s := pointDist2(x[i*d:(i+1)*d], cj)
					if first || s < closest[i] {
						closest[i] = s
					}
					pot += weight(w, i) * closest[i]
					mx = max(mx, closest[i])
				}
				bPot[b], bMax[b] = pot, mx
			}
		}))
	}
	update(centres[:d], true)

	for len(centres) < k*d {
		pot := sumOrdered(bPot)
		if !(pot > 0) {
			return nil, fmt.Errorf("kmeans: seeding: k = %d exceeds the %d distinct points with positive weight", k, len(centres)/d)
		}
		mass := func(i int) float64 { return weight(w, i) * closest[i] }
		for t := 0; t < trials; t++ {
			idx := sampleBlocks(rng.Float64()*pot, bPot, n, mass)
			for j := 0; j < d; j++ {
				cand[t*d+j] = float64(x[idx*d+j])
			}
		}
		// Potential after adding each candidate, per chunk: [chunks, trials].
		kernels.ParallelFor(ch.count, workers, kernels.Func(func(c, _ int) {
			acc := candPot[c*trials : (c+1)*trials]
			clear(acc)
			isFar := make([]bool, trials)
			local := make([]float64, trials)
			b0, b1 := blocks(c)
			for b := b0; b < b1; b++ {
				near := 0
				for t := range isFar {
					isFar[t] = far(b, cand[t*d:(t+1)*d])
					if !isFar[t] {
						near++
					}
				}
				if near > 0 {
					lo, hi := blockRange(b)
					clear(local)
					candidatePotentials(x, d, w, closest, cand, isFar, local, lo, hi)
				}
				for t := range acc {
					if isFar[t] {
						acc[t] += bPot[b] // every point keeps its closest
					} else {
						acc[t] += local[t]
					}
				}
			}
		}))
		best, bestPot := 0, math.Inf(1)
		for t := 0; t < trials; t++ {
			var s float64
			for c := 0; c < ch.count; c++ {
				s += candPot[c*trials+t]
			}
			if s < bestPot {
				best, bestPot = t, s
			}
		}
		centres = append(centres, cand[best*d:(best+1)*d]...)
		update(centres[len(centres)-d:], false)
	}
	return centres, nil
}

// pointDist2 is the squared distance between a point p and c (shape [D]).
func pointDist2[T Float](p []T, c []float64) float64 {
	if len(c) == 3 {
		p, c = p[:3:3], c[:3:3]
		e0, e1, e2 := float64(p[0])-c[0], float64(p[1])-c[1], float64(p[2])-c[2]
		return e0*e0 + e1*e1 + e2*e2
	}
	var s float64
	for t, v := range c {
		e := float64(p[t]) - v
		s += e * e
	}
	return s
}

// candidatePotentials adds, for points [lo, hi) and each candidate t of cand
// (shape [T, D]) not marked skip, weight × min(closest, |x - cand_t|²) into
// acc[t], in point order.
func candidatePotentials[T Float](x []T, d int, w, closest, cand []float64, skip []bool, acc []float64, lo, hi int) {
	for i := lo; i < hi; i++ {
		cl, wi := closest[i], weight(w, i)
		if wi == 0 {
			continue
		}
		p := x[i*d : (i+1)*d]
		for t := range acc {
			if skip[t] {
				continue
			}
			c := cand[t*d : (t+1)*d]
			var s float64
			if d == 3 {
				s = pointDist2(p, c)
			} else {
				for j, v := range c {
					e := float64(p[j]) - v
					s += e * e
					if s >= cl {
						break // partial distance already no better than the current nearest
					}
				}
			}
			acc[t] += wi * min(cl, s)
		}
	}
}

// sampleBlocks returns the point at which the running sum of mass(i), in
// index order, first exceeds r; blockMass holds the sum of each block of
// seedBlock points, summed in the same order. Points of zero mass are never
// returned.
func sampleBlocks(r float64, blockMass []float64, n int, mass func(int) float64) int {
	last := -1
	for b, bm := range blockMass {
		if bm <= 0 {
			continue
		}
		lo, hi := b*seedBlock, min((b+1)*seedBlock, n)
		if r >= bm {
			r -= bm
			for i := hi - 1; i >= lo; i-- {
				if mass(i) > 0 {
					last = i
					break
				}
			}
			continue
		}
		var cum float64
		for i := lo; i < hi; i++ {
			m := mass(i)
			if m <= 0 {
				continue
			}
			cum += m
			last = i
			if cum > r {
				return i
			}
		}
	}
	return last // rounding pushed r past the end: the last point with mass
}

// sumOrdered sums v in index order.
func sumOrdered(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s
}

// appendPoint appends point i of x (shape [N, D]) to dst as float64.
func appendPoint[T Float](dst []float64, x []T, d, i int) []float64 {
	for _, v := range x[i*d : (i+1)*d] {
		dst = append(dst, float64(v))
	}
	return dst
}
