package kmeans

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/igpt/igpt/internal/kernels"
)

// Defaults for Options. scikit-learn uses tol 1e-4 and max_iter 300; on the
// CIFAR-10 palette (k = 512) that stops ~0.1 above the optimum Lloyd
// reaches (mse_per_pixel 68.98 vs 68.86 at full convergence, 162 vs 519
// iterations), and the iterations near convergence are cheap here (the
// bounds skip nearly every point), so the defaults are tighter.
const (
	// DefaultMaxIter caps Lloyd iterations.
	DefaultMaxIter = 1000
	// DefaultTol is the default relative tolerance; see Options.Tol.
	DefaultTol = 1e-5
)

// Bounds slack: a point keeps its centre without a search only when its
// distance u satisfies u·(1+relSlack) + absSlack < lower bound, where
// absSlack = relSlack × the RMS norm of the data. Float64 rounding of the
// bounds is ~1e-16 relative per operation, far below this margin, so
// skipping never changes an assignment that brute force would make.
const relSlack = 1e-9

// Options configures SeedPlusPlus, Lloyd and Fit. The zero value of every
// field except K means its default.
type Options struct {
	K           int    // number of clusters (Lloyd: 0 means len(init)/D)
	Seed        uint64 // k-means++ seed
	LocalTrials int    // k-means++ candidates per step; 0: 2 + floor(ln K)
	MaxIter     int    // Lloyd iteration cap; 0: DefaultMaxIter
	// Tol stops Lloyd once the sum over centres of the squared centre shift
	// is <= Tol × (mean over the D dimensions of the weighted variance of
	// the data), as scikit-learn's tol. 0: DefaultTol; < 0: iterate until no
	// centre moves at all (or MaxIter).
	Tol     float64
	Workers int // threads, at most kernels.Threads() (the shared pool); 0: all. Results do not depend on it.
}

// Result is the outcome of Lloyd or Fit.
type Result struct {
	K, D    int
	Centres []float64 // [K, D] final centres
	Sizes   []float64 // [K] total weight nearest to each final centre
	Labels  []int32   // [N] index of each point's nearest final centre
	// Inertia[t] is the weighted sum of squared distances from each point to
	// its nearest centre at the start of iteration t (before update t).
	Inertia      []float64
	FinalInertia float64 // the same for the final centres
	Iterations   int     // centre updates performed
	Converged    bool    // the tolerance was met before MaxIter
	// Relocated counts empty clusters re-seeded over all iterations.
	Relocated int
}

// Fit seeds opt.K centres with SeedPlusPlus and refines them with Lloyd.
func Fit[T Float](x []T, d int, w []float64, opt Options) (*Result, error) {
	init, err := SeedPlusPlus(x, d, w, opt)
	if err != nil {
		return nil, err
	}
	return Lloyd(x, d, w, init, opt)
}

// Lloyd runs weighted Lloyd iterations over x (shape [N, D]) with weights w
// (shape [N], nil for all ones) from the initial centres init (shape [K, D],
// not modified), until the tolerance is met or opt.MaxIter updates are done.
//
// Each assignment is exact (see the package doc); Hamerly's bounds (one
// upper and one lower bound per point, half the distance from each centre
// to its nearest other centre) plus centre-neighbour lists sorted by
// distance skip most distance computations once the centres settle.
//
// Empty clusters: after an assignment step, a cluster that received no
// weight is re-seeded at the point (of positive weight) farthest from its
// assigned centre; with several empty clusters, in increasing index order,
// each next one goes to the point farthest from both its centre and the
// points already used (farthest-first), and ties go to the lexicographically
// smallest point, so duplicate points and the order of the data do not
// matter. The relocated centre sits exactly on that point; other centres'
// sums are not adjusted (the point moves at the next assignment). If every
// point coincides with a centre, the cluster stays empty where it was.
func Lloyd[T Float](x []T, d int, w []float64, init []float64, opt Options) (*Result, error) {
	n, k, err := checkShapes(len(x), d, len(init))
	if err != nil {
		return nil, fmt.Errorf("kmeans: lloyd: %w", err)
	}
	if opt.K != 0 && opt.K != k {
		return nil, fmt.Errorf("kmeans: lloyd: %d initial centres, options say K = %d", k, opt.K)
	}
	if n == 0 {
		return nil, errors.New("kmeans: lloyd: no points")
	}
	if err := checkWeights(w, n); err != nil {
		return nil, fmt.Errorf("kmeans: lloyd: %w", err)
	}
	if err := checkFinite(init); err != nil {
		return nil, err
	}
	maxIter, tol := opt.iterations()

	s := newLloyd(x, d, w, k, resolveWorkers(opt.Workers))
	meanVar, rms, totalW := s.stats()
	if !(totalW > 0) {
		return nil, fmt.Errorf("kmeans: lloyd: total weight is %v, want > 0", totalW)
	}
	s.absSlack = relSlack * (rms + math.SmallestNonzeroFloat64)
	tolAbs := tol * meanVar
	if tol < 0 {
		tolAbs = 0
	}

	res := &Result{K: k, D: d}
	centres := slices.Clone(init)
	for it := 0; it < maxIter; it++ {
		total := s.assign(centres, it == 0)
		res.Inertia = append(res.Inertia, total.Inertia)
		next, relocated := s.update(centres, total)
		res.Relocated += relocated
		shift := s.shifts(centres, next)
		centres = next
		res.Iterations++
		if shift <= tolAbs {
			res.Converged = true
			break
		}
	}
	total := s.assign(centres, res.Iterations == 0)
	res.Centres = centres
	res.Sizes = total.Weight
	res.FinalInertia = total.Inertia
	res.Labels = s.labels
	return res, nil
}

// lloyd is the state of one Lloyd run.
type lloyd[T Float] struct {
	x        []T       // [N, D]
	w        []float64 // [N] or nil
	n, d, k  int
	ch       chunking
	workers  int
	absSlack float64

	labels []int32   // [N] current assignment
	lower  []float64 // [N] lower bound on the distance to every other centre
	dist2  []float64 // [N] squared distance to the assigned centre
	parts  []*Partials

	half    []float64 // [K] half the distance from each centre to its nearest other centre
	nbr     []int32   // [K, K] each centre's centres by increasing distance (rows with hasNbr)
	nbrDist []float64 // [K, K] those distances, rounded down
	hasNbr  []bool    // [K] whether row j of nbr is built for the current centres
	failed  [][]int32 // [chunks][K] points of each centre whose bounds failed in the last assignment

	// Lower-bound decay for the next assignment: a point assigned to centre
	// maxArg loses maxShift2 from its lower bound, any other point maxShift.
	maxShift, maxShift2 float64
	maxArg              int
}

func newLloyd[T Float](x []T, d int, w []float64, k, workers int) *lloyd[T] {
	n := len(x) / d
	ch := newChunking(n)
	s := &lloyd[T]{
		x: x, w: w, n: n, d: d, k: k, ch: ch, workers: workers,
		labels: make([]int32, n), lower: make([]float64, n), dist2: make([]float64, n),
		parts: make([]*Partials, ch.count), half: make([]float64, k), hasNbr: make([]bool, k),
		failed: make([][]int32, ch.count),
	}
	for c := range s.parts {
		s.parts[c] = NewPartials(k, d)
		s.failed[c] = make([]int32, k)
	}
	return s
}

// stats returns the mean over dimensions of the weighted variance, the
// weighted RMS norm, and the total weight, each reduced in chunk order.
func (s *lloyd[T]) stats() (meanVar, rms, total float64) {
	d := s.d
	sums := make([]float64, s.ch.count*(d+2)) // per chunk: [D] weighted sums, weight, weighted |x|²
	kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
		lo, hi := s.ch.bounds(c)
		acc := sums[c*(d+2) : (c+1)*(d+2)]
		for i := lo; i < hi; i++ {
			wi := weight(s.w, i)
			var sq float64
			for j, v := range s.x[i*d : (i+1)*d] {
				f := float64(v)
				acc[j] += wi * f
				sq += f * f
			}
			acc[d] += wi
			acc[d+1] += wi * sq
		}
	}))
	mean := make([]float64, d)
	var sq float64
	for c := 0; c < s.ch.count; c++ {
		acc := sums[c*(d+2) : (c+1)*(d+2)]
		for j := 0; j < d; j++ {
			mean[j] += acc[j]
		}
		total += acc[d]
		sq += acc[d+1]
	}
	if !(total > 0) {
		return 0, 0, total
	}
	for j := range mean {
		mean[j] /= total
	}
	// Second pass for the variance, to avoid cancellation.
	vs := make([]float64, s.ch.count)
	kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
		lo, hi := s.ch.bounds(c)
		var acc float64
		for i := lo; i < hi; i++ {
			wi := weight(s.w, i)
			for j, v := range s.x[i*d : (i+1)*d] {
				e := float64(v) - mean[j]
				acc += wi * e * e
			}
		}
		vs[c] = acc
	}))
	return sumOrdered(vs) / total / float64(d), math.Sqrt(sq / total), total
}

// geometry recomputes half[] and the sorted neighbour lists of the centres
// whose points will probably need a search: those with more than log2 K
// bound failures in the last assignment (a list costs ~K log K to sort, a
// search without it K per point). Centres without a list are searched by
// brute force; either way the result is exact.
func (s *lloyd[T]) geometry(centres []float64, first bool) {
	k, d := s.k, s.d
	minFailed := int32(math.Log2(float64(k))) + 1
	built := false
	for j := 0; j < k; j++ {
		var f int32
		for _, fc := range s.failed {
			f += fc[j]
		}
		s.hasNbr[j] = !first && k > 2 && k <= 4096 && f >= minFailed
		built = built || s.hasNbr[j]
	}
	if built && s.nbr == nil {
		s.nbr = make([]int32, k*k)
		s.nbrDist = make([]float64, k*k)
	}
	kernels.ParallelFor(k, s.workers, kernels.Func(func(j, _ int) {
		cj := centres[j*d : (j+1)*d]
		var keys []uint64
		if s.hasNbr[j] {
			keys = make([]uint64, k)
		}
		best := math.Inf(1)
		for q := 0; q < k; q++ {
			cq := centres[q*d : (q+1)*d]
			var s2 float64
			for t, v := range cj {
				e := v - cq[t]
				s2 += e * e
			}
			if keys != nil {
				keys[q] = uint64(math.Float32bits(roundDown32(math.Sqrt(s2))))<<32 | uint64(q)
			}
			if q != j && s2 < best {
				best = s2
			}
		}
		s.half[j] = math.Sqrt(best) / 2
		if keys != nil {
			slices.Sort(keys)
			row, rowD := s.nbr[j*k:(j+1)*k], s.nbrDist[j*k:(j+1)*k]
			for t, key := range keys {
				row[t] = int32(key & 0xffffffff)
				rowD[t] = float64(math.Float32frombits(uint32(key >> 32)))
			}
		}
	}))
}

// roundDown32 rounds a non-negative v to a float32 no greater than it.
func roundDown32(v float64) float32 {
	f := float32(v)
	if float64(f) > v {
		f = math.Nextafter32(f, 0)
	}
	return f
}

// assign computes every point's nearest centre (shape centres [K, D]) and
// returns the chunk-ordered sum of the per-chunk partial sums. first means
// labels and bounds are not yet valid.
func (s *lloyd[T]) assign(centres []float64, first bool) *Partials {
	s.geometry(centres, first)
	kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
		lo, hi := s.ch.bounds(c)
		s.assignRange(centres, first, s.parts[c], s.failed[c], lo, hi)
	}))
	total := NewPartials(s.k, s.d)
	for _, p := range s.parts {
		_ = total.Merge(p) // same shape by construction
	}
	return total
}

// assignRange assigns points [lo, hi) into p and counts in failed (shape
// [K]) the points of each centre that needed a search.
func (s *lloyd[T]) assignRange(centres []float64, first bool, p *Partials, failed []int32, lo, hi int) {
	p.Reset()
	clear(failed)
	d := s.d
	xf := make([]float64, d)
	const shrink = 1 / (1 + relSlack)
	for i := lo; i < hi; i++ {
		for t, v := range s.x[i*d : (i+1)*d] {
			xf[t] = float64(v)
		}
		var j int
		var d2, low float64
		if first {
			j, d2, low = s.search(xf, centres, 0, math.Inf(1), first)
			failed[j]++
		} else {
			a := int(s.labels[i])
			low = s.lower[i] - s.maxShift
			if a == s.maxArg {
				low = s.lower[i] - s.maxShift2
			}
			var da2 float64
			if d == 3 {
				da2 = sqDist3(xf, centres[3*a:3*a+3])
			} else {
				da2 = sqDist(xf, centres[a*d:(a+1)*d], d)
			}
			// Keep a when u·(1+relSlack) + absSlack < max(half[a], low),
			// tested on squares to avoid a square root.
			m := (max(s.half[a], low) - s.absSlack) * shrink
			if m > 0 && da2 < m*m {
				j, d2 = a, da2
			} else {
				j, d2, low = s.search(xf, centres, a, da2, false)
				failed[a]++
			}
		}
		s.labels[i] = int32(j)
		s.lower[i] = low
		s.dist2[i] = d2
		p.Add(j, xf, weight(s.w, i), d2)
	}
}

// search finds the exact nearest centre of xf (shape [D]) given that its
// squared distance to centre a is da2 (+Inf when unknown), and returns it,
// its squared distance, and the distance to the second-nearest centre (a
// lower bound on the distance to every other centre).
func (s *lloyd[T]) search(xf, centres []float64, a int, da2 float64, first bool) (int, float64, float64) {
	k, d := s.k, s.d
	if first || !s.hasNbr[a] {
		best, bd, second := 0, math.Inf(1), math.Inf(1)
		for j := 0; j < k; j++ {
			var s2 float64
			if d == 3 {
				s2 = sqDist3(xf, centres[3*j:3*j+3])
			} else {
				s2 = sqDist(xf, centres[j*d:(j+1)*d], d)
			}
			if s2 < bd {
				best, bd, second = j, s2, bd
			} else if s2 < second {
				second = s2
			}
		}
		return best, bd, math.Sqrt(second)
	}
	// Visit a's neighbours by increasing distance δ; every centre after the
	// current one is at least δ - u from x, so stop once that exceeds the
	// second-best distance found.
	u := math.Sqrt(da2)
	row, rowD := s.nbr[a*k:(a+1)*k], s.nbrDist[a*k:(a+1)*k]
	best, bd := a, da2
	second, secondD := math.Inf(1), math.Inf(1)
	stop := secondD
	for t := 0; t < k; t++ {
		if rowD[t]-u > stop {
			break
		}
		j := int(row[t])
		if j == a {
			continue // row[0] unless a has duplicates of lower index
		}
		var s2 float64
		if d == 3 {
			s2 = sqDist3(xf, centres[3*j:3*j+3])
		} else {
			s2 = sqDist(xf, centres[j*d:(j+1)*d], d)
		}
		switch {
		case s2 < bd || (s2 == bd && j < best):
			best, bd, second = j, s2, bd
		case s2 < second:
			second = s2
		default:
			continue
		}
		secondD = math.Sqrt(second)
		stop = secondD*(1+relSlack) + s.absSlack
	}
	return best, bd, secondD
}

// sqDist is the squared distance between x and c (shape [D]), summed in
// index order (the same expression as nearestOne).
func sqDist(x, c []float64, d int) float64 {
	if d == 3 {
		return sqDist3(x, c)
	}
	var s float64
	for t, v := range c[:d] {
		e := x[t] - v
		s += e * e
	}
	return s
}

// sqDist3 is sqDist for D = 3, small enough to inline.
func sqDist3(x, c []float64) float64 {
	x, c = x[:3:3], c[:3:3]
	e0, e1, e2 := x[0]-c[0], x[1]-c[1], x[2]-c[2]
	return e0*e0 + e1*e1 + e2*e2
}

// update turns the summed partials into new centres (shape [K, D]) and
// re-seeds empty clusters; it returns the centres and how many were
// re-seeded.
func (s *lloyd[T]) update(centres []float64, total *Partials) ([]float64, int) {
	next, empty, _ := total.Centres(centres) // shapes match by construction
	relocated := 0
	for _, j := range empty {
		i, ok := s.farthest()
		if !ok {
			break // every point sits on a centre: leave the rest empty
		}
		p := next[j*s.d : (j+1)*s.d]
		for t, v := range s.x[i*s.d : (i+1)*s.d] {
			p[t] = float64(v)
		}
		relocated++
		// Farthest-first: distances now count the new centre too.
		kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
			lo, hi := s.ch.bounds(c)
			for q := lo; q < hi; q++ {
				var s2 float64
				for t, v := range s.x[q*s.d : (q+1)*s.d] {
					e := float64(v) - p[t]
					s2 += e * e
				}
				s.dist2[q] = min(s.dist2[q], s2)
			}
		}))
	}
	return next, relocated
}

// farthest returns the point of positive weight with the largest dist2,
// ties to the lexicographically smallest point, then lowest index; ok is
// false when that distance is 0.
func (s *lloyd[T]) farthest() (int, bool) {
	bestOf := make([]int, s.ch.count)
	kernels.ParallelFor(s.ch.count, s.workers, kernels.Func(func(c, _ int) {
		lo, hi := s.ch.bounds(c)
		b := -1
		for i := lo; i < hi; i++ {
			if weight(s.w, i) > 0 && (b < 0 || s.further(i, b)) {
				b = i
			}
		}
		bestOf[c] = b
	}))
	b := -1
	for _, i := range bestOf {
		if i >= 0 && (b < 0 || s.further(i, b)) {
			b = i
		}
	}
	return b, b >= 0 && s.dist2[b] > 0
}

// further orders candidates for relocation: larger dist2 first, then the
// lexicographically smaller point, then the lower index.
func (s *lloyd[T]) further(i, b int) bool {
	if s.dist2[i] != s.dist2[b] {
		return s.dist2[i] > s.dist2[b]
	}
	xi, xb := s.x[i*s.d:(i+1)*s.d], s.x[b*s.d:(b+1)*s.d]
	for t := range xi {
		if xi[t] != xb[t] {
			return xi[t] < xb[t]
		}
	}
	return i < b
}

// shifts returns the sum over centres of the squared shift from old to next
// (both [K, D]) and records the two largest shifts for the lower bounds.
func (s *lloyd[T]) shifts(old, next []float64) float64 {
	var total float64
	s.maxShift, s.maxShift2, s.maxArg = 0, 0, -1
	for j := 0; j < s.k; j++ {
		var s2 float64
		for t := 0; t < s.d; t++ {
			e := next[j*s.d+t] - old[j*s.d+t]
			s2 += e * e
		}
		total += s2
		sh := math.Sqrt(s2)
		switch {
		case sh > s.maxShift:
			s.maxShift2, s.maxShift, s.maxArg = s.maxShift, sh, j
		case sh > s.maxShift2:
			s.maxShift2 = sh
		}
	}
	return total
}

// checkFinite refuses initial centres holding a NaN or an infinity.
func checkFinite(init []float64) error {
	for i, v := range init {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("kmeans: lloyd: initial centre value %d is %v", i, v)
		}
	}
	return nil
}

// iterations returns Lloyd's iteration cap and relative tolerance, the
// defaults where the options leave them unset.
func (opt Options) iterations() (maxIter int, tol float64) {
	maxIter, tol = opt.MaxIter, opt.Tol
	if maxIter <= 0 {
		maxIter = DefaultMaxIter
	}
	if tol == 0 {
		tol = DefaultTol
	}
	return maxIter, tol
}
