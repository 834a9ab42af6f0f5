package kmeans

import (
	"bytes"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// randomPixels returns n RGB pixels whose channels are drawn from [0, hi)
// around a few random means: many repeated colours when hi is small.
func randomPixels(rng *rand.Rand, n, hi int) []byte {
	pix := make([]byte, 3*n)
	for i := range pix {
		pix[i] = byte(rng.IntN(hi))
	}
	return pix
}

func TestCountsMatchesHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pix := randomPixels(rng, 200000, 48)
	var sparse Histogram
	if err := sparse.Add(pix); err != nil {
		t.Fatal(err)
	}
	// Counted in three parts, merged, and through an encode/decode round
	// trip, as the palette pipeline's parts are.
	var a, b, c Counts
	for i, h := range []*Counts{&a, &b, &c} {
		n := len(pix) / 3
		if err := h.Add(pix[3*(i*n/3) : 3*((i+1)*n/3)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Merge(&b); err != nil {
		t.Fatal(err)
	}
	var enc bytes.Buffer
	if _, err := c.WriteTo(&enc); err != nil {
		t.Fatal(err)
	}
	if err := a.MergeFrom(bytes.NewReader(enc.Bytes()), "c"); err != nil {
		t.Fatal(err)
	}
	got := a.Histogram()
	if got.Len() != sparse.Len() || a.Distinct() != sparse.Len() || a.Total() != sparse.Total() {
		t.Fatalf("distinct %d (histogram %d) total %d, want %d %d", a.Distinct(), got.Len(), a.Total(), sparse.Len(), sparse.Total())
	}
	for i, col := range sparse.Colours {
		if got.Colours[i] != col || got.Counts[i] != sparse.Counts[i] {
			t.Fatalf("entry %d: %#x×%d, want %#x×%d", i, got.Colours[i], got.Counts[i], col, sparse.Counts[i])
		}
	}
}

// TestCountsMemoryIsFlat is the palette's flat-memory rule at its root:
// the histogram a worker or the driver holds is CountsBytes whether it has
// counted a thousand pixels or every colour of the cube many times over.
func TestCountsMemoryIsFlat(t *testing.T) {
	var h Counts
	if h.Bytes() != 0 {
		t.Fatalf("empty counts hold %d bytes", h.Bytes())
	}
	rng := rand.New(rand.NewPCG(5, 6))
	if err := h.Add(randomPixels(rng, 1000, 256)); err != nil {
		t.Fatal(err)
	}
	small := h.Bytes()
	cube := make([]byte, 0, 3*NumColours)
	for c := 0; c < NumColours; c++ {
		cube = append(cube, byte(c>>16), byte(c>>8), byte(c))
	}
	for range 3 {
		if err := h.Add(cube); err != nil {
			t.Fatal(err)
		}
	}
	if h.Distinct() != NumColours || h.Total() != 3*NumColours+1000 {
		t.Fatalf("distinct %d total %d", h.Distinct(), h.Total())
	}
	if small != CountsBytes || h.Bytes() != small {
		t.Fatalf("counts hold %d bytes after 1000 pixels and %d after %d: want %d both times",
			small, h.Bytes(), h.Total(), CountsBytes)
	}
	// And the allocator agrees: counting another 50 million pixels
	// allocates nothing that follows the pixels. The runtime and the test
	// framework allocate a few KB of their own now and then (seen: 5 KB
	// once in CI), so the least of three measurements is held to 64 KiB,
	// still a thousandth of a byte a pixel; a map or slice that followed
	// the colours would allocate tens of megabytes.
	a := uint64(math.MaxUint64)
	for range 3 {
		a = min(a, allocated(func() {
			if err := h.Add(cube); err != nil {
				t.Fatal(err)
			}
		}))
	}
	if a > 64<<10 {
		t.Fatalf("counting %d more pixels allocated %d bytes", NumColours, a)
	}
}

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestDenseFitMemoryIsFlat: SeedCounts and LloydCounts allocate the same
// whether the histogram holds a few thousand colours or two million (only
// a few bytes per 256 colours follow them), where Fit over the colours as
// points needs ~60 bytes a colour.
func TestDenseFitMemoryIsFlat(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	opt := Options{K: 8, Seed: 1, MaxIter: 2, Workers: 1}
	cost := func(colours int) uint64 {
		var h Counts
		if err := h.Add(randomPixels(rng, colours, 256)); err != nil {
			t.Fatal(err)
		}
		return allocated(func() {
			init, err := SeedCounts(&h, opt)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := LloydCounts(&h, init, opt); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, large := cost(5000), cost(2_000_000)
	const slack = 1<<20 + 2_000_000/256*100 // 1 MiB, plus the per-block boxes and starts
	if large > small+slack {
		t.Fatalf("dense k-means allocated %d MB for ~5,000 colours and %d MB for ~1.8 million: it follows the colours",
			small>>20, large>>20)
	}
	t.Logf("allocated %d MB for 5,000 colours, %d MB for ~1.8 million", small>>20, large>>20)
}

func TestCountsPast32Bits(t *testing.T) {
	var h Counts
	const c = 0x123456
	steps := []uint64{math.MaxUint32, 1, math.MaxUint32, 5 << 32, 7}
	var want uint64
	for _, n := range steps {
		if err := h.AddColour(c, n); err != nil {
			t.Fatal(err)
		}
		want += n
		if got := h.Count(c); got != want {
			t.Fatalf("count %d, want %d", got, want)
		}
	}
	// A count of exactly 2^32 has zero low bits and must still count.
	if err := h.AddColour(0x10, 1<<32); err != nil {
		t.Fatal(err)
	}
	if h.Distinct() != 2 || h.Total() != want+1<<32 {
		t.Fatalf("distinct %d total %d", h.Distinct(), h.Total())
	}
	var enc bytes.Buffer
	if _, err := h.WriteTo(&enc); err != nil {
		t.Fatal(err)
	}
	var back Counts
	if err := back.MergeFrom(&enc, "big"); err != nil {
		t.Fatal(err)
	}
	if back.Count(c) != want || back.Count(0x10) != 1<<32 || back.Distinct() != 2 {
		t.Fatalf("decoded %d, %d (%d colours)", back.Count(c), back.Count(0x10), back.Distinct())
	}
	if err := h.AddColour(c, math.MaxUint64); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Fatalf("overflow: %v", err)
	}
	if err := h.AddColour(1<<24, 1); err == nil {
		t.Fatal("colour past 24 bits accepted")
	}
	if err := h.Add([]byte{1, 2}); err == nil {
		t.Fatal("2 bytes accepted as pixels")
	}
}

func TestCountsDecodeErrors(t *testing.T) {
	var h Counts
	if err := h.Add([]byte{1, 2, 3, 1, 2, 3, 200, 0, 9}); err != nil {
		t.Fatal(err)
	}
	var enc bytes.Buffer
	if _, err := h.WriteTo(&enc); err != nil {
		t.Fatal(err)
	}
	good := enc.Bytes()
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated header"},
		{"magic", flip(0), "not a colour-counts file"},
		{"truncated", good[:len(good)-2], "truncated checksum"},
		{"checksum", flip(len(good) - 1), "checksum"},
		{"count", flip(len(good) - 5), "add up to"},
		{"trailing", append(bytes.Clone(good), 0), "data after the checksum"},
	} {
		var d Counts
		err := d.MergeFrom(bytes.NewReader(tc.data), "part-7")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "part-7 at byte") {
			t.Errorf("%s: error %v, want one naming part-7, a byte offset and %q", tc.name, err, tc.want)
		}
	}
}

// countsCases are histograms for the FitCounts equivalence tests: sparse
// and dense colour sets, with weights from one to thousands.
func countsCases(t *testing.T) map[string]*Counts {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	cases := map[string]*Counts{}
	add := func(name string, pix []byte) {
		var h Counts
		if err := h.Add(pix); err != nil {
			t.Fatal(err)
		}
		cases[name] = &h
	}
	add("few", randomPixels(rng, 5000, 256))       // ~5000 colours, weight 1
	add("repeated", randomPixels(rng, 300000, 40)) // ~64000 colours, heavy repeats
	add("wide", randomPixels(rng, 200000, 256))    // ~200000 colours spread over the cube
	clustered := make([]byte, 0, 3*150000)         // tight blobs: empty clusters likely
	for i := 0; i < 150000; i++ {
		m := byte(40 * rng.IntN(6))
		clustered = append(clustered, m+byte(rng.IntN(3)), m+byte(rng.IntN(3)), m+byte(rng.IntN(3)))
	}
	add("clustered", clustered)
	return cases
}

func TestFitCountsEqualsFit(t *testing.T) {
	for name, h := range countsCases(t) {
		x, w := h.Histogram().Points()
		for _, opt := range []Options{
			{K: 16, Seed: 1},
			{K: 64, Seed: 7, Tol: -1, MaxIter: 25},
			{K: 100, Seed: 3, LocalTrials: 3, MaxIter: 15},
		} {
			want, err := Fit(x, 3, w, opt)
			if err != nil {
				t.Fatal(err)
			}
			// The dense path, whatever the size (FitCounts takes it above
			// SparseFitColours only).
			init, err := SeedCounts(h, opt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := LloydCounts(h, init, opt)
			if err != nil {
				t.Fatal(err)
			}
			if !equalFloats(got.Centres, want.Centres) || !equalFloats(got.Sizes, want.Sizes) ||
				!equalFloats(got.Inertia, want.Inertia) || math.Float64bits(got.FinalInertia) != math.Float64bits(want.FinalInertia) ||
				got.Iterations != want.Iterations || got.Converged != want.Converged || got.Relocated != want.Relocated {
				t.Fatalf("%s %+v: FitCounts differs from Fit:\niterations %d/%d converged %v/%v relocated %d/%d final inertia %v/%v",
					name, opt, got.Iterations, want.Iterations, got.Converged, want.Converged, got.Relocated, want.Relocated,
					got.FinalInertia, want.FinalInertia)
			}
			// And against brute force: every colour's nearest final centre.
			sizes := make([]float64, opt.K)
			var inertia float64
			for i := range w {
				j, d2 := bruteNearest([]float64{float64(x[3*i]), float64(x[3*i+1]), float64(x[3*i+2])}, got.Centres, 3)
				sizes[j] += w[i]
				inertia += w[i] * d2
			}
			if !equalFloats(sizes, got.Sizes) || math.Abs(inertia-got.FinalInertia) > 1e-9*inertia {
				t.Fatalf("%s %+v: sizes or inertia differ from brute force (%v vs %v)", name, opt, got.FinalInertia, inertia)
			}
		}
	}
}

func TestFitCountsSmallUsesFit(t *testing.T) {
	h := countsCases(t)["repeated"]
	x, w := h.Histogram().Points()
	want, err := Fit(x, 3, w, Options{K: 32, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := FitCounts(h, Options{K: 32, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !equalFloats(got.Centres, want.Centres) || got.Labels != nil {
		t.Fatal("FitCounts differs from Fit")
	}
}

func TestLloydCountsRelocatesAsLloyd(t *testing.T) {
	// As TestEmptyClusterRelocation: a duplicated centre and one far from
	// every point leave two clusters empty after the first assignment.
	var h Counts
	for _, p := range [][3]byte{{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {100, 100, 100}, {101, 100, 100}, {50, 60, 70}, {50, 60, 70}} {
		if err := h.Add(p[:]); err != nil {
			t.Fatal(err)
		}
	}
	init := []float64{0, 0, 0, 0, 0, 0, 100, 100, 100, 255, 255, 255}
	x, w := h.Histogram().Points()
	want, err := Lloyd(x, 3, w, init, Options{MaxIter: 20})
	if err != nil {
		t.Fatal(err)
	}
	got, err := LloydCounts(&h, init, Options{MaxIter: 20})
	if err != nil {
		t.Fatal(err)
	}
	if want.Relocated < 2 || got.Relocated != want.Relocated || !equalFloats(got.Centres, want.Centres) || !equalFloats(got.Sizes, want.Sizes) {
		t.Fatalf("relocated %d/%d centres %v / %v", got.Relocated, want.Relocated, got.Centres, want.Centres)
	}
	// Every point on a centre: the extra cluster stays empty, as in Lloyd.
	var two Counts
	two.Add([]byte{1, 1, 1, 1, 1, 1, 5, 5, 5})
	res, err := LloydCounts(&two, []float64{1, 1, 1, 5, 5, 5, 1, 1, 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sizes[2] != 0 || res.Sizes[0] != 2 || res.Sizes[1] != 1 || !res.Converged {
		t.Fatalf("sizes %v converged %v, want [2 1 0] true", res.Sizes, res.Converged)
	}
}

func TestFitCountsErrors(t *testing.T) {
	var empty Counts
	if _, err := FitCounts(&empty, Options{K: 2}); err == nil || !strings.Contains(err.Error(), "no colours") {
		t.Fatalf("empty: %v", err)
	}
	var h Counts
	h.Add([]byte{1, 2, 3, 4, 5, 6})
	if _, err := FitCounts(&h, Options{K: 3}); err == nil || !strings.Contains(err.Error(), "exceeds the 2 points") {
		t.Fatalf("k > n: %v", err)
	}
	if _, err := LloydCounts(&h, []float64{1, 2, 3, math.NaN(), 0, 0}, Options{}); err == nil {
		t.Fatal("NaN centre accepted")
	}
}
