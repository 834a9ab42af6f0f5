package kmeans

import (
	"fmt"
	"math"

	"github.com/igpt/igpt/internal/kernels"
)

// LUT maps every 24-bit RGB colour to its nearest centre.
type LUT struct {
	K     int
	Table []uint16 // [2^24] nearest centre of colour r<<16 | g<<8 | b
}

const (
	lutTask = 32 // edge of the cells handed to goroutines (8³ tasks)
	lutLeaf = 4  // edge of the cells searched colour by colour
)

// NewLUT builds the table for centres (at most 65536, finite) with
// GOMAXPROCS goroutines. Each entry is exactly what a brute-force search
// gives: the centre with the smallest float64 squared distance
// (r-c0)² + (g-c1)² + (b-c2)², ties to the lowest index (see Nearest).
//
// The colour cube is subdivided as an octree from cells of edge 32 down to
// edge 4; each cell keeps only the candidate centres whose smallest possible
// distance to the cell is at most the smallest largest possible distance of
// any centre. A cell with one candidate is filled at once; a leaf cell
// compares its remaining candidates colour by colour.
func NewLUT(centres [][3]float32) (*LUT, error) {
	c := make([][3]float64, len(centres))
	for j, cj := range centres {
		for t, v := range cj {
			c[j][t] = float64(v)
		}
	}
	return buildLUT(c, nil, nil)
}

// buildLUT builds the table of centres c into table (length 2^24; nil
// allocates one), as NewLUT describes. With occ (from newLUTOccupancy),
// only the entries of cells holding a colour of occ are written; the
// others keep what table held.
func buildLUT(c [][3]float64, table []uint16, occ *lutOccupancy) (*LUT, error) {
	k := len(c)
	if k == 0 || k > 1<<16 {
		return nil, fmt.Errorf("kmeans: lut: %d centres, want 1..65536", k)
	}
	for j := range c {
		for _, f := range c[j] {
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("kmeans: lut: centre %d has value %v", j, f)
			}
		}
	}
	if table == nil {
		table = make([]uint16, 1<<24)
	}
	b := &lutBuilder{k: k, c: c, table: table[:1<<24], occ: occ}
	all := make([]int32, k)
	for j := range all {
		all[j] = int32(j)
	}
	const per = 256 / lutTask
	workers := resolveWorkers(0)
	scratch := make([]*lutScratch, workers)
	kernels.ParallelFor(per*per*per, workers, kernels.Func(func(t, w int) {
		if scratch[w] == nil {
			scratch[w] = newLUTScratch(k)
		}
		r0, g0, b0 := (t/(per*per))*lutTask, (t/per%per)*lutTask, (t%per)*lutTask
		b.cell(r0, g0, b0, lutTask, all, scratch[w], 0)
	}))
	return &LUT{K: k, Table: b.table}, nil
}

// Lookup returns the nearest centre of colour (r, g, b).
func (l *LUT) Lookup(r, g, b uint8) uint16 {
	return l.Table[int(r)<<16|int(g)<<8|int(b)]
}

// Map writes the nearest centre of each pixel of pix (interleaved RGB,
// shape [P, 3]) into dst (shape [P]).
func (l *LUT) Map(pix []byte, dst []uint16) error {
	if len(pix)%3 != 0 || len(dst) != len(pix)/3 {
		return fmt.Errorf("kmeans: lut: %d bytes of RGB into %d tokens", len(pix), len(dst))
	}
	t := l.Table[:1<<24]
	for i := range dst {
		p := pix[3*i : 3*i+3 : 3*i+3]
		dst[i] = t[int(p[0])<<16|int(p[1])<<8|int(p[2])]
	}
	return nil
}

type lutBuilder struct {
	k     int
	c     [][3]float64 // [K, 3] centres
	table []uint16     // [2^24]
	occ   *lutOccupancy
}

// lutOccupancy marks the octree cells of every level (edge lutTask down to
// lutLeaf) that hold at least one colour of a set.
type lutOccupancy struct {
	cells [][]bool // per level: [(256/edge)³] cell (r0, g0, b0) at ((r0/edge)·n + g0/edge)·n + b0/edge
}

// newLUTOccupancy marks the cells of the colours for which each(fn) calls fn.
func newLUTOccupancy(each func(fn func(c uint32))) *lutOccupancy {
	o := &lutOccupancy{}
	for size := lutTask; size >= lutLeaf; size /= 2 {
		n := 256 / size
		o.cells = append(o.cells, make([]bool, n*n*n))
	}
	const n = 256 / lutLeaf
	leaf := o.cells[len(o.cells)-1]
	each(func(c uint32) {
		r, g, b := int(c>>16)/lutLeaf, int(c>>8&0xff)/lutLeaf, int(c&0xff)/lutLeaf
		leaf[(r*n+g)*n+b] = true
	})
	for l := len(o.cells) - 1; l > 0; l-- {
		fine, coarse := o.cells[l], o.cells[l-1]
		nf := 256 / (lutTask >> l)
		nc := nf / 2
		for i, on := range fine {
			if on {
				r, g, b := i/(nf*nf)/2, i/nf%nf/2, i%nf/2
				coarse[(r*nc+g)*nc+b] = true
			}
		}
	}
	return o
}

// has reports whether the cell of edge size at (r0, g0, b0), at octree
// level level, holds a colour.
func (o *lutOccupancy) has(level, r0, g0, b0, size int) bool {
	n := 256 / size
	return o.cells[level][((r0/size)*n+g0/size)*n+b0/size]
}

type lutScratch struct {
	keep  [][]int32                            // per octree level: surviving candidates
	axis  [][3][lutLeaf]float64                // per leaf candidate: squared offsets per axis
	bestD [lutLeaf * lutLeaf * lutLeaf]float64 // leaf: best squared distance per colour
	bestI [lutLeaf * lutLeaf * lutLeaf]int32   // leaf: best centre per colour
}

func newLUTScratch(k int) *lutScratch {
	s := &lutScratch{axis: make([][3][lutLeaf]float64, k)}
	for size := lutTask; size >= lutLeaf; size /= 2 {
		s.keep = append(s.keep, make([]int32, 0, k))
	}
	return s
}

// cell fills the cell of edge size at (r0, g0, b0) given candidates cand
// (increasing indices) that include every centre that can be nearest to a
// colour in it.
func (b *lutBuilder) cell(r0, g0, b0, size int, cand []int32, s *lutScratch, level int) {
	if b.occ != nil && !b.occ.has(level, r0, g0, b0, size) {
		return
	}
	lo := [3]float64{float64(r0), float64(g0), float64(b0)}
	hi := [3]float64{lo[0] + float64(size-1), lo[1] + float64(size-1), lo[2] + float64(size-1)}
	// Smallest over candidates of the largest squared distance to the cell.
	minMax := math.Inf(1)
	for _, j := range cand {
		c := &b.c[j]
		var dmax float64
		for t := 0; t < 3; t++ {
			e := max(math.Abs(c[t]-lo[t]), math.Abs(c[t]-hi[t]))
			dmax += e * e
		}
		minMax = min(minMax, dmax)
	}
	// Slack covers rounding when centres are not small binary fractions.
	limit := minMax*(1+1e-9) + 1e-9
	keep := s.keep[level][:0]
	for _, j := range cand {
		c := &b.c[j]
		var dmin float64
		for t := 0; t < 3; t++ {
			e := max(lo[t]-c[t], c[t]-hi[t], 0)
			dmin += e * e
		}
		if dmin <= limit {
			keep = append(keep, j)
		}
	}
	s.keep[level] = keep
	switch {
	case len(keep) == 1:
		v := uint16(keep[0])
		for r := r0; r < r0+size; r++ {
			for g := g0; g < g0+size; g++ {
				row := b.table[r<<16|g<<8|b0 : r<<16|g<<8|b0+size]
				for i := range row {
					row[i] = v
				}
			}
		}
	case size <= lutLeaf:
		b.leaf(r0, g0, b0, keep, s)
	default:
		h := size / 2
		for q := 0; q < 8; q++ {
			b.cell(r0+h*(q>>2), g0+h*(q>>1&1), b0+h*(q&1), h, keep, s, level+1)
		}
	}
}

// leaf searches a cell of edge lutLeaf colour by colour among cand, with
// the same float64 expression as nearestOne: ((r-c0)² + (g-c1)²) + (b-c2)².
func (b *lutBuilder) leaf(r0, g0, b0 int, cand []int32, s *lutScratch) {
	const L = lutLeaf
	for q, j := range cand {
		c := &b.c[j]
		for i := 0; i < L; i++ {
			er, eg, eb := float64(r0+i)-c[0], float64(g0+i)-c[1], float64(b0+i)-c[2]
			s.axis[q][0][i], s.axis[q][1][i], s.axis[q][2][i] = er*er, eg*eg, eb*eb
		}
	}
	for i := range s.bestD {
		s.bestD[i] = math.Inf(1)
	}
	for q, j := range cand {
		ax := &s.axis[q]
		for i := 0; i < L; i++ {
			for g := 0; g < L; g++ {
				rg := ax[0][i] + ax[1][g]
				bd := s.bestD[(i*L+g)*L : (i*L+g)*L+L]
				bi := s.bestI[(i*L+g)*L : (i*L+g)*L+L]
				for t := 0; t < L; t++ {
					if d := rg + ax[2][t]; d < bd[t] {
						bd[t], bi[t] = d, j
					}
				}
			}
		}
	}
	for i := 0; i < L; i++ {
		for g := 0; g < L; g++ {
			base := (r0+i)<<16 | (g0+g)<<8 | b0
			for t := 0; t < L; t++ {
				b.table[base+t] = uint16(s.bestI[(i*L+g)*L+t])
			}
		}
	}
}
