package kmeans

import (
	"math/rand/v2"
	"os"
	"testing"
)

// benchHistogram returns a colour histogram: the first 1000 CIFAR-10 images
// when the shared data is present, else 1M pixels from a Gaussian mixture.
func benchHistogram(b *testing.B) (x []float32, w []float64) {
	var h Histogram
	if _, err := os.Stat(cifarPath()); err == nil {
		if err := h.Add(readCIFAR(b, 1000)); err != nil {
			b.Fatal(err)
		}
		return h.Points()
	}
	rng := rand.New(rand.NewPCG(1, 1))
	pix := make([]byte, 3<<20)
	for i := 0; i < len(pix); i += 3 {
		m := float64(rng.IntN(20)) * 12
		for t := 0; t < 3; t++ {
			pix[i+t] = byte(max(0, min(255, m+30*rng.NormFloat64())))
		}
	}
	if err := h.Add(pix); err != nil {
		b.Fatal(err)
	}
	return h.Points()
}

func BenchmarkSeedPlusPlusK512(b *testing.B) {
	x, w := benchHistogram(b)
	b.ReportMetric(float64(len(w)), "points")
	for b.Loop() {
		if _, err := SeedPlusPlus(x, 3, w, Options{K: 512, Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLloydIteration times 30 Lloyd iterations (k = 512) from a fixed
// k-means++ start and reports seconds per iteration; the first iteration is
// a full search, later ones mostly pass the bounds test.
func BenchmarkLloydIteration(b *testing.B) {
	x, w := benchHistogram(b)
	init, err := SeedPlusPlus(x, 3, w, Options{K: 512, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	iters := 0
	for b.Loop() {
		res, err := Lloyd(x, 3, w, init, Options{MaxIter: 30, Tol: -1})
		if err != nil {
			b.Fatal(err)
		}
		iters += res.Iterations
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(iters), "s/iter")
	b.ReportMetric(float64(len(w)), "points")
}

func BenchmarkLUTBuild(b *testing.B) {
	x, w := benchHistogram(b)
	init, err := SeedPlusPlus(x, 3, w, Options{K: 512, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	res, err := Lloyd(x, 3, w, init, Options{MaxIter: 20})
	if err != nil {
		b.Fatal(err)
	}
	c := Unflatten3(res.Centres)
	for b.Loop() {
		if _, err := NewLUT(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHistogramAdd(b *testing.B) {
	pix := readCIFAR(b, 1000)
	b.SetBytes(int64(len(pix)))
	for b.Loop() {
		var h Histogram
		for i := 0; i < len(pix); i += 3072 {
			if err := h.Add(pix[i : i+3072]); err != nil {
				b.Fatal(err)
			}
		}
		h.Compact()
	}
}
