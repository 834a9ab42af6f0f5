package kmeans

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestNearestMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name    string
		n, d, k int
		ints    bool
	}{
		{"rgb-ints-with-ties", 5000, 3, 40, true},
		{"d1", 1000, 1, 7, true},
		{"d64-floats", 800, 64, 33, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var x []float64
			if tc.ints {
				for _, v := range randomInts(rng, tc.n, tc.d, 16) {
					x = append(x, float64(v))
				}
			} else {
				x = clusteredFloats(rng, tc.n, tc.d, 5)
			}
			centres := make([]float64, tc.k*tc.d)
			for i := range centres {
				if tc.ints {
					centres[i] = float64(rng.IntN(16)) // many exact ties
				} else {
					centres[i] = x[rng.IntN(len(x))]
				}
			}
			labels, dist2, err := Nearest(x, tc.d, centres)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.n; i++ {
				j, dd := bruteNearest(x[i*tc.d:(i+1)*tc.d], centres, tc.d)
				if int(labels[i]) != j || dist2[i] != dd {
					t.Fatalf("point %d: got (%d, %v), brute force (%d, %v)", i, labels[i], dist2[i], j, dd)
				}
			}
		})
	}
}

func TestShapeErrors(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6}
	for _, tc := range []struct {
		name, want string
		run        func() error
	}{
		{"nearest-ragged", "whole number", func() error { _, _, err := Nearest(x[:5], 3, []float64{0, 0, 0}); return err }},
		{"lloyd-centres", "whole number", func() error { _, err := Lloyd(x, 3, nil, []float64{1, 2}, Options{}); return err }},
		{"lloyd-k-mismatch", "K = 3", func() error { _, err := Lloyd(x, 3, nil, []float64{1, 2, 3}, Options{K: 3}); return err }},
		{"negative-weight", "weight 1", func() error { _, err := Fit(x, 3, []float64{1, -1}, Options{K: 1}); return err }},
		{"nan-weight", "weight 0", func() error { _, err := Fit(x, 3, []float64{math.NaN(), 1}, Options{K: 1}); return err }},
		{"weights-length", "3 weights", func() error { _, err := Fit(x, 3, []float64{1, 1, 1}, Options{K: 1}); return err }},
		{"all-zero-weight", "total weight", func() error { _, err := Fit(x, 3, []float64{0, 0}, Options{K: 1}); return err }},
		{"k-zero", "k = 0", func() error { _, err := Fit(x, 3, nil, Options{}); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Lloyd with bounds must follow exactly the trajectory of a plain Lloyd
// that searches every centre for every point.
func TestLloydMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name     string
		n, d, k  int
		weighted bool
		floats   bool // float64 Gaussian blobs (one chunk, so sums keep the naive order)
	}{
		{"rgb-integer", 20000, 3, 64, false, false},
		{"rgb-weighted", 20000, 3, 32, true, false},
		{"d8-integer", 6000, 8, 20, true, false},
		{"d64-float-unweighted", 3000, 64, 32, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var x []float64
			if tc.floats {
				x = clusteredFloats(rng, tc.n, tc.d, 40)
			} else {
				for _, v := range randomInts(rng, tc.n, tc.d, 256) {
					x = append(x, float64(v))
				}
			}
			var w []float64
			if tc.weighted {
				w = make([]float64, tc.n)
				for i := range w {
					w[i] = float64(rng.IntN(5)) // includes zeros
				}
			}
			init, err := SeedPlusPlus(x, tc.d, w, Options{K: tc.k, Seed: 9})
			if err != nil {
				t.Fatal(err)
			}
			res, err := Lloyd(x, tc.d, w, init, Options{MaxIter: 40, Tol: -1})
			if err != nil {
				t.Fatal(err)
			}
			if res.Relocated != 0 {
				t.Skipf("empty clusters occurred; the naive reference does not relocate")
			}
			ref, iters, err := naiveLloyd(x, tc.d, w, init, 40, 0)
			if err != nil {
				t.Fatal(err)
			}
			if iters != res.Iterations {
				t.Fatalf("iterations %d, naive %d", res.Iterations, iters)
			}
			if !equalFloats(res.Centres, ref) {
				t.Fatalf("centres differ from the naive Lloyd")
			}
			// Final labels are the brute-force nearest centres.
			xf := make([]float64, tc.d)
			var inertia float64
			for i := 0; i < tc.n; i++ {
				copy(xf, x[i*tc.d:(i+1)*tc.d])
				j, dd := bruteNearest(xf, res.Centres, tc.d)
				if int(res.Labels[i]) != j {
					t.Fatalf("point %d labelled %d, nearest is %d", i, res.Labels[i], j)
				}
				inertia += weight(w, i) * dd
			}
			if math.Abs(inertia-res.FinalInertia) > 1e-9*inertia {
				t.Fatalf("final inertia %v, brute force %v", res.FinalInertia, inertia)
			}
			for q := 1; q < len(res.Inertia); q++ {
				if res.Inertia[q] > res.Inertia[q-1]*(1+1e-12) {
					t.Fatalf("inertia rose at iteration %d: %v -> %v", q, res.Inertia[q-1], res.Inertia[q])
				}
			}
		})
	}
}

// The core claim of the palette stage: weighted Lloyd over the colour
// histogram gives the same centres as plain Lloyd over every pixel.
func TestHistogramLloydEqualsPixelLloyd(t *testing.T) {
	pix := readCIFAR(t, 500)
	var h Histogram
	if err := h.Add(pix); err != nil {
		t.Fatal(err)
	}
	hx, hw := h.Points()
	all := make([]float32, len(pix)) // [P, 3] every pixel, unweighted
	for i, v := range pix {
		all[i] = float32(v)
	}
	const k = 128
	init, err := SeedPlusPlus(hx, 3, hw, Options{K: k, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	opt := Options{MaxIter: 60, Tol: 1e-6}
	byHist, err := Lloyd(hx, 3, hw, init, opt)
	if err != nil {
		t.Fatal(err)
	}
	byPixel, err := Lloyd(all, 3, nil, init, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pixels, %d distinct colours, k=%d: %d iterations, converged %v, MSE %.4f",
		len(all)/3, len(hw), k, byHist.Iterations, byHist.Converged, byHist.FinalInertia/float64(len(all)/3))
	if byHist.Iterations != byPixel.Iterations || byHist.Converged != byPixel.Converged {
		t.Fatalf("iterations %d/%v (histogram) vs %d/%v (pixels)", byHist.Iterations, byHist.Converged, byPixel.Iterations, byPixel.Converged)
	}
	for i := range byHist.Centres {
		if math.Abs(byHist.Centres[i]-byPixel.Centres[i]) > 1e-9 {
			t.Fatalf("centre value %d: %v (histogram) vs %v (pixels)", i, byHist.Centres[i], byPixel.Centres[i])
		}
	}
	if !slices.Equal(byHist.Sizes, byPixel.Sizes) {
		t.Fatalf("cluster sizes differ")
	}
	for q := range byHist.Inertia {
		if a, b := byHist.Inertia[q], byPixel.Inertia[q]; math.Abs(a-b) > 1e-9*b {
			t.Fatalf("inertia at iteration %d: %v vs %v", q, a, b)
		}
	}
}

func TestDeterministicAcrossWorkers(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		name string
		d, k int
	}{{"d3", 3, 50}, {"d16", 16, 20}} {
		t.Run(tc.name, func(t *testing.T) {
			x := clusteredFloats(rng, 5*minChunk+123, tc.d, 30) // several chunks, non-integer sums
			w := make([]float64, len(x)/tc.d)
			for i := range w {
				w[i] = rng.Float64()
			}
			var results []*Result
			for _, run := range []struct{ procs, workers int }{{1, 0}, {2, 0}, {2, 3}, {1, 7}} {
				withProcs(run.procs, func() {
					res, err := Fit(x, tc.d, w, Options{K: tc.k, Seed: 42, MaxIter: 50, Workers: run.workers})
					if err != nil {
						t.Fatal(err)
					}
					results = append(results, res)
				})
			}
			for r, res := range results[1:] {
				if !equalFloats(res.Centres, results[0].Centres) || !equalFloats(res.Inertia, results[0].Inertia) ||
					!equalFloats(res.Sizes, results[0].Sizes) || res.Iterations != results[0].Iterations {
					t.Fatalf("run %d differs from run 0", r+1)
				}
			}
		})
	}
}

func TestEmptyClusterRelocation(t *testing.T) {
	// Two tight groups; three initial centres, one far from all points and
	// one duplicated: two clusters are empty after the first assignment.
	x := []float64{
		0, 0, 0, 1, 0, 0, 0, 1, 0,
		100, 100, 100, 101, 100, 100,
		50, 60, 70, // lone point: farthest from its centre
	}
	init := []float64{0, 0, 0, 0, 0, 0, 100, 100, 100, 900, 900, 900}
	res, err := Lloyd(x, 3, nil, init, Options{MaxIter: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Relocated < 2 {
		t.Fatalf("relocated %d clusters, want >= 2", res.Relocated)
	}
	for j, s := range res.Sizes {
		if s == 0 {
			t.Fatalf("cluster %d still empty: sizes %v", j, res.Sizes)
		}
	}
	var found bool
	for j := 0; j < 4; j++ {
		if slices.Equal(res.Centres[3*j:3*j+3], []float64{50, 60, 70}) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no centre on the farthest point (50,60,70): %v", res.Centres)
	}
	if !res.Converged {
		t.Fatalf("did not converge")
	}
}

func TestEmptyClusterWhenAllPointsCovered(t *testing.T) {
	// Two distinct points, three centres: one cluster must stay empty.
	x := []float32{1, 1, 1, 1, 1, 1, 5, 5, 5}
	init := []float64{1, 1, 1, 5, 5, 5, 1, 1, 1}
	res, err := Lloyd(x, 3, nil, init, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sizes[2] != 0 || res.Sizes[0] != 2 || res.Sizes[1] != 1 || !res.Converged {
		t.Fatalf("sizes %v converged %v, want [2 1 0] true", res.Sizes, res.Converged)
	}
}

func TestKExceedsDistinctPoints(t *testing.T) {
	x := []float32{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 7, 7, 9, 9, 9}
	w := []float64{1, 2, 1, 1, 3, 0} // (9,9,9) has weight 0
	for _, tc := range []struct {
		k       int
		wantErr bool
	}{{3, false}, {4, true}, {6, true}, {7, true}} {
		_, err := Fit(x, 3, w, Options{K: tc.k, Seed: 1})
		if (err != nil) != tc.wantErr {
			t.Fatalf("k=%d: error %v, want error %v", tc.k, err, tc.wantErr)
		}
		if tc.wantErr && tc.k <= 6 && !strings.Contains(err.Error(), "3 distinct points with positive weight") {
			t.Fatalf("k=%d: unhelpful error %v", tc.k, err)
		}
	}
}

func TestZeroWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := randomInts(rng, 3000, 3, 256)
	w := make([]float64, 3000)
	var kx []float32
	var kw []float64
	for i := range w {
		w[i] = float64(rng.IntN(3))
		if w[i] > 0 {
			kx = append(kx, x[3*i:3*i+3]...)
			kw = append(kw, w[i])
		}
	}
	init, err := SeedPlusPlus(x, 3, w, Options{K: 20, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Seeding picks only points of positive weight.
	for j := 0; j < 20; j++ {
		ok := false
		for i := 0; i < len(kw); i++ {
			if float64(kx[3*i]) == init[3*j] && float64(kx[3*i+1]) == init[3*j+1] && float64(kx[3*i+2]) == init[3*j+2] {
				ok = true
				break
			}
		}
		if !ok {
			t.Fatalf("seed centre %d %v is not a point of positive weight", j, init[3*j:3*j+3])
		}
	}
	// Seeding and Lloyd ignore zero-weight points entirely.
	init2, err := SeedPlusPlus(kx, 3, kw, Options{K: 20, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !equalFloats(init, init2) {
		t.Fatalf("seeding changed when zero-weight points were removed")
	}
	a, err := Lloyd(x, 3, w, init, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Lloyd(kx, 3, kw, init, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !equalFloats(a.Centres, b.Centres) || a.Iterations != b.Iterations || a.FinalInertia != b.FinalInertia {
		t.Fatalf("zero-weight points changed Lloyd's result")
	}
}

func TestSeedingSpreadsAndIsSeeded(t *testing.T) {
	// Four far-apart blobs, k = 4: k-means++ must put one centre in each.
	rng := rand.New(rand.NewPCG(9, 10))
	var x []float64
	for b := 0; b < 4; b++ {
		for i := 0; i < 500; i++ {
			x = append(x, float64(b*1000)+rng.Float64(), rng.Float64(), rng.Float64())
		}
	}
	for seed := uint64(0); seed < 5; seed++ {
		c, err := SeedPlusPlus(x, 3, nil, Options{K: 4, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for j := 0; j < 4; j++ {
			seen[int(math.Round(c[3*j]/1000))] = true
		}
		if len(seen) != 4 {
			t.Fatalf("seed %d: centres %v do not cover the 4 blobs", seed, c)
		}
		c2, _ := SeedPlusPlus(x, 3, nil, Options{K: 4, Seed: seed})
		if !equalFloats(c, c2) {
			t.Fatalf("seed %d: seeding not reproducible", seed)
		}
	}
}

func TestPartialsMergeEqualsWhole(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const n, d, k = 2000, 3, 10
	x := randomInts(rng, n, d, 256)
	centres := make([]float64, k*d)
	for i := range centres {
		centres[i] = float64(rng.IntN(256))
	}
	whole := NewPartials(k, d)
	parts := []*Partials{NewPartials(k, d), NewPartials(k, d), NewPartials(k, d)}
	xf := make([]float64, d)
	for i := 0; i < n; i++ {
		for q := range xf {
			xf[q] = float64(x[i*d+q])
		}
		w := float64(1 + i%3)
		j := whole.AddNearest(xf, w, centres)
		if bj, _ := bruteNearest(xf, centres, d); bj != j {
			t.Fatalf("AddNearest chose %d, nearest is %d", j, bj)
		}
		parts[i%3].AddNearest(xf, w, centres)
	}
	// Merge in a different order than the data.
	merged := NewPartials(k, d)
	for _, p := range []*Partials{parts[2], parts[0], parts[1]} {
		if err := merged.Merge(p); err != nil {
			t.Fatal(err)
		}
	}
	if !equalFloats(merged.Sum, whole.Sum) || !equalFloats(merged.Weight, whole.Weight) {
		t.Fatalf("merged partials differ from the whole")
	}
	if math.Abs(merged.Inertia-whole.Inertia) > 1e-9*whole.Inertia {
		t.Fatalf("merged inertia %v, whole %v", merged.Inertia, whole.Inertia)
	}
	if err := merged.Merge(NewPartials(k, d+1)); err == nil {
		t.Fatalf("merging partials of another shape succeeded")
	}
	next, empty, err := merged.Centres(centres)
	if err != nil {
		t.Fatal(err)
	}
	for j := 0; j < k; j++ {
		if slices.Contains(empty, j) {
			if !slices.Equal(next[j*d:(j+1)*d], centres[j*d:(j+1)*d]) {
				t.Fatalf("empty cluster %d moved", j)
			}
			continue
		}
		for q := 0; q < d; q++ {
			if want := merged.Sum[j*d+q] / merged.Weight[j]; next[j*d+q] != want {
				t.Fatalf("centre %d: %v, want %v", j, next[j*d+q], want)
			}
		}
	}
}

// The neighbour-list search must return brute force's answer from any
// starting centre, including exact ties (points on bisectors) and
// duplicate centres, and a valid lower bound on the second distance.
func TestSearchFromAnyCentre(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	const k, d = 64, 3
	centres := make([]float64, k*d)
	for i := range centres {
		centres[i] = float64(2 * rng.IntN(40)) // even: bisector midpoints are integers
	}
	copy(centres[5*d:6*d], centres[40*d:41*d]) // duplicate pair, lower index 5
	var x []float64
	for i := 0; i < 3000; i++ {
		a, b := rng.IntN(k), rng.IntN(k)
		for q := 0; q < d; q++ {
			x = append(x, (centres[a*d+q]+centres[b*d+q])/2)
		}
	}
	s := newLloyd(x, d, nil, k, 1)
	s.absSlack = relSlack * 100
	for j := range s.failed[0] {
		s.failed[0][j] = 1000 // force every neighbour list
	}
	s.geometry(centres, false)
	ties := 0
	for i := 0; i < len(x)/d; i++ {
		p := x[i*d : (i+1)*d]
		want, wd := bruteNearest(p, centres, d)
		var second float64 = math.Inf(1)
		for j := 0; j < k; j++ {
			if j != want {
				second = min(second, sqDist(p, centres[j*d:(j+1)*d], d))
			}
		}
		if second == wd {
			ties++
		}
		for _, a := range []int{0, 5, 40, k - 1, rng.IntN(k)} {
			got, gd, low := s.search(p, centres, a, sqDist(p, centres[a*d:(a+1)*d], d), false)
			if got != want || gd != wd {
				t.Fatalf("point %v from centre %d: got (%d, %v), brute force (%d, %v)", p, a, got, gd, want, wd)
			}
			if low > math.Sqrt(second)*(1+1e-12) {
				t.Fatalf("point %v from centre %d: lower bound %v exceeds second distance %v", p, a, low, math.Sqrt(second))
			}
		}
	}
	if ties == 0 {
		t.Fatal("no exact ties exercised")
	}
	t.Logf("%d points, %d with an exact tie for nearest", len(x)/d, ties)
}

// naiveSeed is plain greedy k-means++ with the same random draws as
// SeedPlusPlus, without blocks, chunks or pruning.
func naiveSeed(x []float32, d int, w []float64, k int, seed uint64) []float64 {
	n := len(x) / d
	rng := newRNG(seed)
	pick := func(r float64, mass func(int) float64) int {
		var cum float64
		last := -1
		for i := 0; i < n; i++ {
			if m := mass(i); m > 0 {
				cum += m
				last = i
				if cum > r {
					return i
				}
			}
		}
		return last
	}
	point := func(i int) []float64 {
		p := make([]float64, d)
		for q := range p {
			p[q] = float64(x[i*d+q])
		}
		return p
	}
	var total float64
	for i := 0; i < n; i++ {
		total += weight(w, i)
	}
	centres := point(pick(rng.Float64()*total, func(i int) float64 { return weight(w, i) }))
	closest := make([]float64, n)
	for i := range closest {
		closest[i] = sqDist(point(i), centres, d)
	}
	trials := localTrials(k, 0)
	for len(centres) < k*d {
		var pot float64
		for i := 0; i < n; i++ {
			pot += weight(w, i) * closest[i]
		}
		var cands [][]float64
		for t := 0; t < trials; t++ {
			cands = append(cands, point(pick(rng.Float64()*pot, func(i int) float64 { return weight(w, i) * closest[i] })))
		}
		best, bestPot := 0, math.Inf(1)
		for t, c := range cands {
			var p float64
			for i := 0; i < n; i++ {
				p += weight(w, i) * min(closest[i], sqDist(point(i), c, d))
			}
			if p < bestPot {
				best, bestPot = t, p
			}
		}
		centres = append(centres, cands[best]...)
		for i := range closest {
			closest[i] = min(closest[i], sqDist(point(i), cands[best], d))
		}
	}
	return centres
}

// On integer data with integer weights every potential is exact, so the
// blocked, chunked, pruned seeding must pick exactly the naive centres.
func TestSeedPlusPlusMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, tc := range []struct {
		name    string
		n, d, k int
		sorted  bool // like a Histogram: colours in increasing packed order
	}{
		{"rgb-sorted-histogram", 20000, 3, 48, true},
		{"rgb-unsorted", 20000, 3, 48, false},
		{"d8", 9000, 8, 16, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := randomInts(rng, tc.n, tc.d, 256)
			w := make([]float64, tc.n)
			for i := range w {
				w[i] = float64(rng.IntN(4))
			}
			if tc.sorted {
				var h Histogram
				pix := make([]byte, len(x))
				for i, v := range x {
					pix[i] = byte(v)
				}
				if err := h.Add(pix); err != nil {
					t.Fatal(err)
				}
				x, w = h.Points()
			}
			got, err := SeedPlusPlus(x, tc.d, w, Options{K: tc.k, Seed: 77})
			if err != nil {
				t.Fatal(err)
			}
			if want := naiveSeed(x, tc.d, w, tc.k, 77); !equalFloats(got, want) {
				t.Fatalf("seeding differs from the naive k-means++")
			}
		})
	}
}
