package kmeans

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/igpt/igpt/internal/kernels"
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
	s := newSeeder(x, d, w, localTrials(k, opt.LocalTrials), resolveWorkers(opt.Workers))
	rng := newRNG(opt.Seed)
	total := s.boxes()
	if !(total > 0) {
		return nil, fmt.Errorf("kmeans: seeding: total weight is %v, want > 0", total)
	}
	// First centre with probability proportional to weight.
	first := sampleBlocks(rng.Float64()*total, s.bPot, n, func(i int) float64 { return weight(w, i) })
	centres := appendPoint(make([]float64, 0, k*d), x, d, first) // [k, D], growing
	s.update(centres[:d], true)
	for len(centres) < k*d {
		pot := sumOrdered(s.bPot)
		if !(pot > 0) {
			return nil, fmt.Errorf("kmeans: seeding: k = %d exceeds the %d distinct points with positive weight", k, len(centres)/d)
		}
		s.drawCandidates(rng, pot)
		best := s.bestCandidate()
		centres = append(centres, s.cand[best*d:(best+1)*d]...)
		s.update(centres[len(centres)-d:], false)
	}
	return centres, nil
}

// seeder holds SeedPlusPlus's state: points x (shape [N, D]) with weights
// w, grouped in blocks of seedBlock points, and the candidates of a step.
type seeder[T Float] struct {
	x       []T
	w       []float64
	n, d    int
	trials  int
	workers int
	ch      chunking

	closest []float64 // [N] squared distance to the nearest chosen centre
	box     []float64 // [blocks, 2, D] per block: min corner, max corner
	bPot    []float64 // [blocks] sum of weight × closest over the block
	bMax    []float64 // [blocks] largest closest in the block
	cand    []float64 // [trials, D]
	candPot []float64 // [chunks, trials] potential after adding each candidate
}

func newSeeder[T Float](x []T, d int, w []float64, trials, workers int) *seeder[T] {
	n := len(x) / d
	ch := newChunking(n)
	nb := (n + seedBlock - 1) / seedBlock
	return &seeder[T]{x: x, w: w, n: n, d: d, trials: trials, workers: workers, ch: ch,
		closest: make([]float64, n), box: make([]float64, 2*nb*d),
		bPot: make([]float64, nb), bMax: make([]float64, nb),
		cand: make([]float64, trials*d), candPot: make([]float64, ch.count*trials),
	}
}

// blocks returns the blocks of chunk c (chunk sizes are multiples of
// seedBlock).
func (s *seeder[T]) blocks(c int) (b0, b1 int) {
	lo, hi := s.ch.bounds(c)
	return lo / seedBlock, (hi + seedBlock - 1) / seedBlock
}

func (s *seeder[T]) blockRange(b int) (lo, hi int) {
	return b * seedBlock, min((b+1)*seedBlock, s.n)
}

// far reports whether every point of block b is certainly farther from c
// (shape [D]) than from its nearest centre.
func (s *seeder[T]) far(b int, c []float64) bool {
	d := s.d
	lo, hi := s.box[2*b*d:(2*b+1)*d], s.box[(2*b+1)*d:(2*b+2)*d]
	var sum float64
	for t, v := range c {
		e := max(lo[t]-v, v-hi[t], 0)
		sum += e * e
	}
	return sum > s.bMax[b]*(1+1e-9)
}

// boxes computes every block's bounding box, puts its weight in bPot and
// returns the total weight.
func (s *seeder[T]) boxes() float64 {
	d, x, w := s.d, s.x, s.w
	kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
		b0, b1 := s.blocks(c)
		for b := b0; b < b1; b++ {
			lo, hi := s.blockRange(b)
			bmin, bmax := s.box[2*b*d:(2*b+1)*d], s.box[(2*b+1)*d:(2*b+2)*d]
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
			s.bPot[b] = mass
		}
	}))
	return sumOrdered(s.bPot)
}

// update folds centre cj (shape [D]) into closest, bPot and bMax; first
// marks the first centre, before which nothing was chosen.
func (s *seeder[T]) update(cj []float64, first bool) {
	d, x, w := s.d, s.x, s.w
	kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
		b0, b1 := s.blocks(c)
		for b := b0; b < b1; b++ {
			if !first && s.far(b, cj) {
				continue // no point of the block gets closer
			}
			lo, hi := s.blockRange(b)
			var pot, mx float64
			for i := lo; i < hi; i++ {
				dist := pointDist2(x[i*d:(i+1)*d], cj)
				if first || dist < s.closest[i] {
					s.closest[i] = dist
				}
				pot += weight(w, i) * s.closest[i]
				mx = max(mx, s.closest[i])
			}
			s.bPot[b], s.bMax[b] = pot, mx
		}
	}))
}

// drawCandidates draws the step's candidates, each with probability
// proportional to weight × closest (whose sum is pot).
func (s *seeder[T]) drawCandidates(rng *rand.Rand, pot float64) {
	d := s.d
	mass := func(i int) float64 { return weight(s.w, i) * s.closest[i] }
	for t := 0; t < s.trials; t++ {
		idx := sampleBlocks(rng.Float64()*pot, s.bPot, s.n, mass)
		for j := 0; j < d; j++ {
			s.cand[t*d+j] = float64(s.x[idx*d+j])
		}
	}
}

// bestCandidate returns the candidate of lowest potential once added,
// summing per-chunk potentials in chunk order.
func (s *seeder[T]) bestCandidate() int {
	trials, d := s.trials, s.d
	kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
		acc := s.candPot[c*trials : (c+1)*trials]
		clear(acc)
		isFar := make([]bool, trials)
		local := make([]float64, trials)
		b0, b1 := s.blocks(c)
		for b := b0; b < b1; b++ {
			near := 0
			for t := range isFar {
				isFar[t] = s.far(b, s.cand[t*d:(t+1)*d])
				if !isFar[t] {
					near++
				}
			}
			if near > 0 {
				lo, hi := s.blockRange(b)
				clear(local)
				candidatePotentials(s.x, d, s.w, s.closest, s.cand, isFar, local, lo, hi)
			}
			for t := range acc {
				if isFar[t] {
					acc[t] += s.bPot[b] // every point keeps its closest
				} else {
					acc[t] += local[t]
				}
			}
		}
	}))
	best, bestPot := 0, math.Inf(1)
	for t := 0; t < trials; t++ {
		var sum float64
		for c := 0; c < s.ch.count; c++ {
			sum += s.candPot[c*trials+t]
		}
		if sum < bestPot {
			best, bestPot = t, sum
		}
	}
	return best
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
