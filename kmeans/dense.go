package kmeans

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"

	"github.com/igpt/igpt/internal/kernels"
)

// FitCounts is Fit over a colour histogram held as dense Counts: the same
// centres, sizes, inertias, iterations and convergence as
// Fit(x, 3, w, opt) with x, w = h.Histogram().Points(), bit for bit (the
// tests check it), in memory bounded whatever the number of distinct
// colours. Result.Labels is nil.
//
// Up to SparseFitColours distinct colours it runs Fit on those points
// (about 52 bytes a colour at most, ~100 MiB at the limit). Above, it runs
// SeedCounts and LloydCounts, which hold, besides h's CountsBytes, a
// bitmap of the colours present (2 MiB), one float64 per colour of the
// cube while seeding (DenseSeedBytes, 128 MiB) and a lookup table of the
// nearest centre of every colour while iterating (32 MiB), plus a few
// bytes per 256 colours: Fit over a full cube of points would need about
// 870 MiB.
func FitCounts(h *Counts, opt Options) (*Result, error) {
	p, err := newDensePoints(h)
	if err != nil {
		return nil, err
	}
	if p.n <= SparseFitColours {
		x, w := h.Histogram().Points()
		res, err := Fit(x, 3, w, opt)
		if res != nil {
			res.Labels = nil
		}
		return res, err
	}
	init, err := p.seed(opt)
	if err != nil {
		return nil, err
	}
	// The seeding's per-colour distances (128 MiB) are garbage: collect
	// them before Lloyd allocates its table, or both count in the peak.
	runtime.GC()
	return p.lloyd(init, opt)
}

// SparseFitColours is the number of distinct colours up to which FitCounts
// fits the colours as points (faster there; see FitCounts).
const SparseFitColours = 1 << 21

// SeedCounts is SeedPlusPlus over the colours of h, bit for bit, in
// memory independent of their number: the points are h's colours in
// increasing order, split into the same chunks and seeding blocks by rank,
// and every sum is taken in the same order.
func SeedCounts(h *Counts, opt Options) ([]float64, error) {
	p, err := newDensePoints(h)
	if err != nil {
		return nil, err
	}
	return p.seed(opt)
}

// LloydCounts is Lloyd over the colours of h from init (shape [K, 3]),
// with the same arithmetic (see SeedCounts), except that each assignment
// step reads a lookup table of the current centres (NewLUT's exact
// brute-force nearest centre, ties to the lowest index, built only for
// the cells that hold a colour) instead of Lloyd's bounds, which only
// skip work: both give brute force's assignment, so the results are
// Lloyd's, bit for bit (Labels is nil).
func LloydCounts(h *Counts, init []float64, opt Options) (*Result, error) {
	p, err := newDensePoints(h)
	if err != nil {
		return nil, err
	}
	return p.lloyd(init, opt)
}

// DenseSeedBytes is the memory of the per-colour distances SeedCounts
// holds, on top of the Counts themselves.
const DenseSeedBytes = 8 * NumColours

// densePoints presents the colours of a Counts as Fit's points: point i
// is the i-th distinct colour in increasing order.
type densePoints struct {
	h     *Counts
	n     int
	ch    chunking
	set   []uint64 // [NumColours/64] bit c: colour c has a positive count
	start []uint32 // [blocks+1] colour of the first point of each seeding block; NumColours at the end
}

func newDensePoints(h *Counts) (*densePoints, error) {
	p := &densePoints{h: h, set: make([]uint64, NumColours/64)}
	if h.lo != nil {
		for c, v := range h.lo {
			if v != 0 {
				p.set[c>>6] |= 1 << (c & 63)
			}
		}
		for c, up := range h.hi {
			if up != 0 {
				p.set[c>>6] |= 1 << (c & 63)
			}
		}
	}
	for _, w := range p.set {
		p.n += bits.OnesCount64(w)
	}
	if p.n == 0 {
		return nil, errors.New("kmeans: no colours counted")
	}
	p.ch = newChunking(p.n)
	nb := (p.n + seedBlock - 1) / seedBlock
	p.start = make([]uint32, 0, nb+1)
	i := 0
	for c := p.next(0); c < NumColours; c = p.next(c + 1) {
		if i%seedBlock == 0 {
			p.start = append(p.start, c)
		}
		i++
	}
	p.start = append(p.start, NumColours)
	return p, nil
}

// next returns the first colour >= c with a positive count, or NumColours.
func (p *densePoints) next(c uint32) uint32 {
	if c >= NumColours {
		return NumColours
	}
	w := c >> 6
	if word := p.set[w] >> (c & 63); word != 0 {
		return c + uint32(bits.TrailingZeros64(word))
	}
	for w++; w < NumColours/64; w++ {
		if p.set[w] != 0 {
			return w<<6 + uint32(bits.TrailingZeros64(p.set[w]))
		}
	}
	return NumColours
}

// weight is Histogram.Points' weight of colour c.
func (p *densePoints) weight(c uint32) float64 { return float64(p.h.Count(c)) }

// xyz is Histogram.Points' point of colour c, in float64.
func xyz(c uint32) [3]float64 {
	return [3]float64{float64(c >> 16), float64(c >> 8 & 0xff), float64(c & 0xff)}
}

// blocks returns the seeding blocks of chunk c.
func (p *densePoints) blocks(c int) (b0, b1 int) {
	lo, hi := p.ch.bounds(c)
	return lo / seedBlock, (hi + seedBlock - 1) / seedBlock
}

// colours returns the colour range [from, to) of blocks [b0, b1).
func (p *densePoints) colours(b0, b1 int) (from, to uint32) { return p.start[b0], p.start[b1] }

// denseSeeder is seeder over densePoints; closest is indexed by colour.
type denseSeeder struct {
	p       *densePoints
	trials  int
	workers int
	closest []float64 // [NumColours]
	box     []float64 // [blocks, 2, 3]
	bPot    []float64 // [blocks]
	bMax    []float64 // [blocks]
	cand    []float64 // [trials, 3]
	candPot []float64 // [chunks, trials]
}

// seed is SeedPlusPlus over p, step for step.
func (p *densePoints) seed(opt Options) ([]float64, error) {
	k := opt.K
	if k <= 0 {
		return nil, fmt.Errorf("kmeans: seeding: k = %d, want > 0", k)
	}
	if k > p.n {
		return nil, fmt.Errorf("kmeans: seeding: k = %d exceeds the %d points", k, p.n)
	}
	trials := localTrials(k, opt.LocalTrials)
	nb := len(p.start) - 1
	s := &denseSeeder{p: p, trials: trials, workers: resolveWorkers(opt.Workers),
		closest: make([]float64, NumColours), box: make([]float64, 2*nb*3),
		bPot: make([]float64, nb), bMax: make([]float64, nb),
		cand: make([]float64, trials*3), candPot: make([]float64, p.ch.count*trials),
	}
	rng := newRNG(opt.Seed)
	total := s.boxes()
	if !(total > 0) {
		return nil, fmt.Errorf("kmeans: seeding: total weight is %v, want > 0", total)
	}
	first := s.sample(rng.Float64()*total, p.weight)
	x := xyz(first)
	centres := append(make([]float64, 0, k*3), x[:]...)
	s.update(centres[:3], true)
	mass := func(c uint32) float64 { return p.weight(c) * s.closest[c] }
	for len(centres) < k*3 {
		pot := sumOrdered(s.bPot)
		if !(pot > 0) {
			return nil, fmt.Errorf("kmeans: seeding: k = %d exceeds the %d distinct points with positive weight", k, len(centres)/3)
		}
		for t := 0; t < s.trials; t++ {
			x := xyz(s.sample(rng.Float64()*pot, mass))
			copy(s.cand[t*3:], x[:])
		}
		best := s.bestCandidate()
		centres = append(centres, s.cand[best*3:(best+1)*3]...)
		s.update(centres[len(centres)-3:], false)
	}
	return centres, nil
}

// boxes is seeder.boxes.
func (s *denseSeeder) boxes() float64 {
	p := s.p
	kernels.ParallelFor(p.ch.count, s.workers, kernels.Func(func(c, _ int) {
		b0, b1 := p.blocks(c)
		for b := b0; b < b1; b++ {
			bmin, bmax := s.box[2*b*3:(2*b+1)*3], s.box[(2*b+1)*3:(2*b+2)*3]
			var mass float64
			from, to := p.colours(b, b+1)
			for col := p.next(from); col < to; col = p.next(col + 1) {
				x := xyz(col)
				for t, f := range x {
					if col == from || f < bmin[t] {
						bmin[t] = f
					}
					if col == from || f > bmax[t] {
						bmax[t] = f
					}
				}
				mass += p.weight(col)
			}
			s.bPot[b] = mass
		}
	}))
	return sumOrdered(s.bPot)
}

// far is seeder.far.
func (s *denseSeeder) far(b int, c []float64) bool {
	lo, hi := s.box[2*b*3:(2*b+1)*3], s.box[(2*b+1)*3:(2*b+2)*3]
	var sum float64
	for t, v := range c {
		e := max(lo[t]-v, v-hi[t], 0)
		sum += e * e
	}
	return sum > s.bMax[b]*(1+1e-9)
}

// dist2 is pointDist2 for a colour.
func dist2(x [3]float64, c []float64) float64 {
	c = c[:3:3]
	e0, e1, e2 := x[0]-c[0], x[1]-c[1], x[2]-c[2]
	return e0*e0 + e1*e1 + e2*e2
}

// update is seeder.update.
func (s *denseSeeder) update(cj []float64, first bool) {
	p := s.p
	kernels.ParallelFor(p.ch.count, s.workers, kernels.Func(func(c, _ int) {
		b0, b1 := p.blocks(c)
		for b := b0; b < b1; b++ {
			if !first && s.far(b, cj) {
				continue
			}
			var pot, mx float64
			from, to := p.colours(b, b+1)
			for col := p.next(from); col < to; col = p.next(col + 1) {
				d := dist2(xyz(col), cj)
				if first || d < s.closest[col] {
					s.closest[col] = d
				}
				pot += p.weight(col) * s.closest[col]
				mx = max(mx, s.closest[col])
			}
			s.bPot[b], s.bMax[b] = pot, mx
		}
	}))
}

// sample is sampleBlocks over the blocks' colours. A block passed over
// whole is searched for its last colour of positive mass only if the draw
// runs off the end (rounding), where sampleBlocks would return it.
func (s *denseSeeder) sample(r float64, mass func(uint32) float64) uint32 {
	p := s.p
	last, passed := uint32(NumColours), -1
	for b, bm := range s.bPot {
		if bm <= 0 {
			continue
		}
		from, to := p.colours(b, b+1)
		if r >= bm {
			r -= bm
			passed = b
			continue
		}
		passed = -1
		var cum float64
		for col := p.next(from); col < to; col = p.next(col + 1) {
			m := mass(col)
			if m <= 0 {
				continue
			}
			cum += m
			last = col
			if cum > r {
				return col
			}
		}
	}
	if passed >= 0 {
		from, to := p.colours(passed, passed+1)
		for col := p.next(from); col < to; col = p.next(col + 1) {
			if mass(col) > 0 {
				last = col
			}
		}
	}
	return last
}

// bestCandidate is seeder.bestCandidate.
func (s *denseSeeder) bestCandidate() int {
	p, trials := s.p, s.trials
	kernels.ParallelFor(p.ch.count, s.workers, kernels.Func(func(c, _ int) {
		acc := s.candPot[c*trials : (c+1)*trials]
		clear(acc)
		isFar := make([]bool, trials)
		local := make([]float64, trials)
		b0, b1 := p.blocks(c)
		for b := b0; b < b1; b++ {
			near := 0
			for t := range isFar {
				isFar[t] = s.far(b, s.cand[t*3:(t+1)*3])
				if !isFar[t] {
					near++
				}
			}
			if near > 0 {
				clear(local)
				from, to := p.colours(b, b+1)
				for col := p.next(from); col < to; col = p.next(col + 1) {
					cl, wi := s.closest[col], p.weight(col)
					if wi == 0 {
						continue
					}
					x := xyz(col)
					for t := range local {
						if !isFar[t] {
							local[t] += wi * min(cl, dist2(x, s.cand[t*3:(t+1)*3]))
						}
					}
				}
			}
			for t := range acc {
				if isFar[t] {
					acc[t] += s.bPot[b]
				} else {
					acc[t] += local[t]
				}
			}
		}
	}))
	best, bestPot := 0, math.Inf(1)
	for t := 0; t < trials; t++ {
		var sum float64
		for c := 0; c < p.ch.count; c++ {
			sum += s.candPot[c*trials+t]
		}
		if sum < bestPot {
			best, bestPot = t, sum
		}
	}
	return best
}

// denseLloyd is lloyd over densePoints, assigning through a lookup table.
type denseLloyd struct {
	p       *densePoints
	k       int
	workers int
	parts   []*Partials
	lut     *LUT     // nearest centre of every colour for the centres last assigned
	table   []uint16 // lut's storage, reused
	occ     *lutOccupancy
	cs      []float64 // the centres lut was built for
}

// lloyd is Lloyd over p, step for step (see FitCounts).
func (p *densePoints) lloyd(init []float64, opt Options) (*Result, error) {
	if len(init) == 0 || len(init)%3 != 0 {
		return nil, fmt.Errorf("kmeans: lloyd: %d initial centre values are not whole RGB centres", len(init))
	}
	k := len(init) / 3
	if opt.K != 0 && opt.K != k {
		return nil, fmt.Errorf("kmeans: lloyd: %d initial centres, options say K = %d", k, opt.K)
	}
	if k > 1<<16 {
		return nil, fmt.Errorf("kmeans: lloyd: %d centres; the colour lookup table holds at most 65536", k)
	}
	if err := checkFinite(init); err != nil {
		return nil, err
	}
	maxIter, tol := opt.iterations()
	s := &denseLloyd{p: p, k: k, workers: resolveWorkers(opt.Workers), parts: make([]*Partials, p.ch.count),
		table: make([]uint16, NumColours)}
	for c := range s.parts {
		s.parts[c] = NewPartials(k, 3)
	}
	s.occ = newLUTOccupancy(func(fn func(uint32)) {
		for col := p.next(0); col < NumColours; col = p.next(col + 1) {
			fn(col)
		}
	})
	meanVar, totalW := s.stats()
	if !(totalW > 0) {
		return nil, fmt.Errorf("kmeans: lloyd: total weight is %v, want > 0", totalW)
	}
	tolAbs := tol * meanVar
	if tol < 0 {
		tolAbs = 0
	}
	res := &Result{K: k, D: 3}
	centres := slices.Clone(init)
	for it := 0; it < maxIter; it++ {
		total, err := s.assign(centres)
		if err != nil {
			return nil, err
		}
		res.Inertia = append(res.Inertia, total.Inertia)
		next, relocated := s.update(centres, total)
		res.Relocated += relocated
		shift := shifts(centres, next)
		centres = next
		res.Iterations++
		if shift <= tolAbs {
			res.Converged = true
			break
		}
	}
	total, err := s.assign(centres)
	if err != nil {
		return nil, err
	}
	res.Centres = centres
	res.Sizes = total.Weight
	res.FinalInertia = total.Inertia
	return res, nil
}

// stats is lloyd.stats (without the RMS norm, which only Lloyd's bounds
// use).
func (s *denseLloyd) stats() (meanVar, total float64) {
	p := s.p
	const d = 3
	sums := make([]float64, p.ch.count*(d+1))
	kernels.ParallelFor(p.ch.count, s.workers, kernels.Func(func(c, _ int) {
		acc := sums[c*(d+1) : (c+1)*(d+1)]
		from, to := p.colours(p.blocks(c))
		for col := p.next(from); col < to; col = p.next(col + 1) {
			wi := p.weight(col)
			for j, f := range xyz(col) {
				acc[j] += wi * f
			}
			acc[d] += wi
		}
	}))
	mean := make([]float64, d)
	for c := 0; c < p.ch.count; c++ {
		acc := sums[c*(d+1) : (c+1)*(d+1)]
		for j := 0; j < d; j++ {
			mean[j] += acc[j]
		}
		total += acc[d]
	}
	if !(total > 0) {
		return 0, total
	}
	for j := range mean {
		mean[j] /= total
	}
	vs := make([]float64, p.ch.count)
	kernels.ParallelFor(p.ch.count, s.workers, kernels.Func(func(c, _ int) {
		var acc float64
		from, to := p.colours(p.blocks(c))
		for col := p.next(from); col < to; col = p.next(col + 1) {
			wi := p.weight(col)
			for j, f := range xyz(col) {
				e := f - mean[j]
				acc += wi * e * e
			}
		}
		vs[c] = acc
	}))
	return sumOrdered(vs) / total / d, total
}

// assign builds the lookup table of centres and sums every colour into
// its nearest centre's partials, chunk by chunk in Lloyd's order.
func (s *denseLloyd) assign(centres []float64) (*Partials, error) {
	c3 := make([][3]float64, s.k)
	for j := range c3 {
		copy(c3[j][:], centres[3*j:3*j+3])
	}
	lut, err := buildLUT(c3, s.table, s.occ)
	if err != nil {
		return nil, fmt.Errorf("kmeans: lloyd: %w", err)
	}
	s.lut, s.cs = lut, centres
	p := s.p
	kernels.ParallelFor(p.ch.count, s.workers, kernels.Func(func(c, _ int) {
		part := s.parts[c]
		part.Reset()
		from, to := p.colours(p.blocks(c))
		for col := p.next(from); col < to; col = p.next(col + 1) {
			x := xyz(col)
			j := int(lut.Table[col])
			part.Add(j, x[:], p.weight(col), sqDist3(x[:], centres[3*j:3*j+3]))
		}
	}))
	total := NewPartials(s.k, 3)
	for _, part := range s.parts {
		_ = total.Merge(part) // same shape by construction
	}
	return total, nil
}

// update is lloyd.update: empty clusters are re-seeded farthest-first at
// the colour of positive weight farthest from its centre (and from the
// colours already used), ties to the smallest colour.
func (s *denseLloyd) update(centres []float64, total *Partials) ([]float64, int) {
	next, empty, _ := total.Centres(centres) // shapes match by construction
	relocated := 0
	var used [][3]float64
	for _, j := range empty {
		col, ok := s.farthest(used)
		if !ok {
			break
		}
		x := xyz(col)
		copy(next[3*j:3*j+3], x[:])
		used = append(used, x)
		relocated++
	}
	return next, relocated
}

// farthest returns the colour of positive weight whose distance to its
// assigned centre (and to every colour of used) is largest, ties to the
// smallest colour; ok is false when that distance is 0.
func (s *denseLloyd) farthest(used [][3]float64) (uint32, bool) {
	p := s.p
	type best struct {
		col uint32
		d   float64
		ok  bool
	}
	bestOf := make([]best, p.ch.count)
	kernels.ParallelFor(p.ch.count, s.workers, kernels.Func(func(c, _ int) {
		var b best
		from, to := p.colours(p.blocks(c))
		for col := p.next(from); col < to; col = p.next(col + 1) {
			if p.weight(col) <= 0 {
				continue
			}
			x := xyz(col)
			j := int(s.lut.Table[col])
			d := sqDist3(x[:], s.cs[3*j:3*j+3])
			for _, u := range used {
				var s2 float64
				for t := range x {
					e := x[t] - u[t]
					s2 += e * e
				}
				d = min(d, s2)
			}
			if !b.ok || d > b.d {
				b = best{col, d, true}
			}
		}
		bestOf[c] = b
	}))
	var b best
	for _, o := range bestOf {
		if o.ok && (!b.ok || o.d > b.d) {
			b = o
		}
	}
	return b.col, b.ok && b.d > 0
}

// shifts is lloyd.shifts' total: the sum over centres of the squared
// shift from old to next (both [K, 3]).
func shifts(old, next []float64) float64 {
	var total float64
	for j := 0; j < len(old)/3; j++ {
		var s2 float64
		for t := 0; t < 3; t++ {
			e := next[j*3+t] - old[j*3+t]
			s2 += e * e
		}
		total += s2
	}
	return total
}
