package kmeans

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// cifarPath is the exact CIFAR-10 subset of the shared data folder
// ($IGPT_SHARED_DATA, else ../shared/data beside the repository).
func cifarPath() string {
	dir := os.Getenv("IGPT_SHARED_DATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "data")
	}
	return filepath.Join(dir, "cifar10-exact-subset", "data_batch_1_first4000.bin")
}

// readCIFAR returns the interleaved RGB pixels (shape [images×1024, 3]) of
// the first n records of a CIFAR-10 binary file, or skips the test.
func readCIFAR(tb testing.TB, n int) []byte {
	tb.Helper()
	path := cifarPath()
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		tb.Skipf("CIFAR-10 exact subset not found at %s (set IGPT_SHARED_DATA to the shared data folder to run this test)", path)
	}
	if err != nil {
		tb.Fatal(err)
	}
	const rec = 3073
	if len(raw)%rec != 0 {
		tb.Fatalf("%s: %d bytes is not whole %d-byte records", path, len(raw), rec)
	}
	n = min(n, len(raw)/rec)
	pix := make([]byte, 0, n*3072)
	for i := 0; i < n; i++ {
		r := raw[i*rec+1 : (i+1)*rec]
		for p := 0; p < 1024; p++ {
			pix = append(pix, r[p], r[1024+p], r[2048+p])
		}
	}
	return pix
}

// randomInts returns n points of dimension d with integer coordinates in
// [0, hi), as float32.
func randomInts(rng *rand.Rand, n, d, hi int) []float32 {
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.IntN(hi))
	}
	return x
}

// clusteredFloats returns n float64 points of dimension d around c random
// Gaussian blobs.
func clusteredFloats(rng *rand.Rand, n, d, c int) []float64 {
	means := make([]float64, c*d)
	for i := range means {
		means[i] = rng.Float64() * 100
	}
	x := make([]float64, n*d)
	for i := 0; i < n; i++ {
		m := rng.IntN(c)
		for t := 0; t < d; t++ {
			x[i*d+t] = means[m*d+t] + rng.NormFloat64()*3
		}
	}
	return x
}

// bruteNearest is an independent exact nearest-centre search: float64
// squared distances, ties to the lowest index.
func bruteNearest(x []float64, centres []float64, d int) (int, float64) {
	best, bd := -1, math.Inf(1)
	for j := 0; j < len(centres)/d; j++ {
		var s float64
		for t := 0; t < d; t++ {
			e := x[t] - centres[j*d+t]
			s += e * e
		}
		if best < 0 || s < bd {
			best, bd = j, s
		}
	}
	return best, bd
}

// naiveLloyd is a plain reference Lloyd: brute-force assignment of every
// point in every iteration, weighted means, the same tolerance rule. It
// does not handle empty clusters (it reports them).
func naiveLloyd[T Float](x []T, d int, w []float64, init []float64, iters int, tolAbs float64) (centres []float64, n int, err error) {
	k := len(init) / d
	centres = append([]float64(nil), init...)
	xf := make([]float64, d)
	for it := 0; it < iters; it++ {
		sum := make([]float64, k*d)
		wt := make([]float64, k)
		for i := 0; i < len(x)/d; i++ {
			for t := range xf {
				xf[t] = float64(x[i*d+t])
			}
			j, _ := bruteNearest(xf, centres, d)
			wi := weight(w, i)
			for t := range xf {
				sum[j*d+t] += wi * xf[t]
			}
			wt[j] += wi
		}
		var shift float64
		for j := 0; j < k; j++ {
			if wt[j] == 0 {
				return nil, 0, fmt.Errorf("cluster %d empty at iteration %d", j, it)
			}
			for t := 0; t < d; t++ {
				v := sum[j*d+t] / wt[j]
				e := v - centres[j*d+t]
				shift += e * e
				centres[j*d+t] = v
			}
		}
		n++
		if shift <= tolAbs {
			break
		}
	}
	return centres, n, nil
}

// withProcs runs f with GOMAXPROCS set to p.
func withProcs(p int, f func()) {
	old := runtime.GOMAXPROCS(p)
	defer runtime.GOMAXPROCS(old)
	f()
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}
