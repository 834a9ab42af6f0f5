package kmeans

import (
	"fmt"
	"math"
)

// Partials holds the sufficient statistics of one Lloyd step over a subset of
// the data: for each of K clusters the weighted sum of its points and its
// total weight, plus the weighted inertia of the subset. Partials over
// disjoint subsets Merge into the Partials of their union, so a Beam
// CombineFn can use it as its accumulator (all state is in exported fields):
//
//	AddInput:          acc.AddNearest(point, weight, centres)
//	MergeAccumulators: acc.Merge(other)
//	ExtractOutput:     acc.Centres(centres)
//
// Float64 addition is not associative, so a different merge order may change
// the last bits of the sums, except for integer data with integer weights
// (pixels, histogram counts), whose sums are exact below 2^53.
type Partials struct {
	K, D    int
	Sum     []float64 // [K, D] weighted sum of the points assigned to each cluster
	Weight  []float64 // [K] total weight assigned to each cluster
	Inertia float64   // sum over added points of weight × squared distance to their centre
}

// NewPartials returns empty partial sums for k clusters of dimension d.
func NewPartials(k, d int) *Partials {
	return &Partials{K: k, D: d, Sum: make([]float64, k*d), Weight: make([]float64, k)}
}

// Reset zeroes p in place.
func (p *Partials) Reset() {
	clear(p.Sum)
	clear(p.Weight)
	p.Inertia = 0
}

// Add adds point x (shape [D]) with weight w to cluster j; dist2 is its
// squared distance to centre j, added (times w) to the inertia.
func (p *Partials) Add(j int, x []float64, w, dist2 float64) {
	s := p.Sum[j*p.D : (j+1)*p.D]
	for i, v := range x[:p.D] {
		s[i] += w * v
	}
	p.Weight[j] += w
	p.Inertia += w * dist2
}

// AddNearest assigns x (shape [D]) to its nearest centre among centres
// (shape [K, D]; ties to the lowest index), adds it with weight w and
// returns the chosen index.
func (p *Partials) AddNearest(x []float64, w float64, centres []float64) int {
	j, d2 := nearestOne(x, centres, p.K, p.D)
	p.Add(j, x, w, d2)
	return j
}

// Merge adds q's sums into p. Both must have the same K and D.
func (p *Partials) Merge(q *Partials) error {
	if p.K != q.K || p.D != q.D || len(q.Sum) != len(p.Sum) || len(q.Weight) != len(p.Weight) {
		return fmt.Errorf("kmeans: merging partials of shape [%d, %d] into [%d, %d]", q.K, q.D, p.K, p.D)
	}
	for i, v := range q.Sum {
		p.Sum[i] += v
	}
	for i, v := range q.Weight {
		p.Weight[i] += v
	}
	p.Inertia += q.Inertia
	return nil
}

// Centres returns the updated centres (shape [K, D]): the weighted mean of
// each cluster, or, for a cluster with zero weight, its previous centre from
// prev (shape [K, D]); empty lists those clusters. Partials alone cannot
// relocate an empty cluster to a far point; Lloyd does that in memory.
func (p *Partials) Centres(prev []float64) (centres []float64, empty []int, err error) {
	if len(prev) != p.K*p.D {
		return nil, nil, fmt.Errorf("kmeans: previous centres have %d values, want K×D = %d×%d", len(prev), p.K, p.D)
	}
	centres = make([]float64, p.K*p.D)
	for j := 0; j < p.K; j++ {
		c := centres[j*p.D : (j+1)*p.D]
		if p.Weight[j] <= 0 {
			copy(c, prev[j*p.D:(j+1)*p.D])
			empty = append(empty, j)
			continue
		}
		w := p.Weight[j]
		for i, s := range p.Sum[j*p.D : (j+1)*p.D] {
			c[i] = s / w
		}
	}
	return centres, empty, nil
}

// nearestOne is the exact brute-force nearest centre of x: shape x [D],
// centres [K, D]; ties go to the lowest index.
func nearestOne(x, centres []float64, k, d int) (int, float64) {
	best, bd := 0, math.Inf(1)
	for j := 0; j < k; j++ {
		c := centres[j*d : (j+1)*d]
		var s float64
		for i := range c {
			e := x[i] - c[i]
			s += e * e
		}
		if s < bd {
			best, bd = j, s
		}
	}
	return best, bd
}
