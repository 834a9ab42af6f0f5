package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// forEachPath runs f once per dispatch path this CPU supports (and restores
// the current one), so every test covers generic, avx2 and avx512 code.
func forEachPath(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, name := range Paths() {
		t.Run(name, func(t *testing.T) {
			old, err := SetPath(name)
			if err != nil {
				t.Fatal(err)
			}
			defer SetPath(old)
			f(t)
		})
	}
}

func randSlice(r *rand.Rand, n int, scale float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = (2*r.Float32() - 1) * scale
	}
	return s
}

// relErr returns max|got-want| / max(max|want|, tiny).
func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-want[i]))
		den = math.Max(den, math.Abs(want[i]))
	}
	if den < 1e-30 {
		return num
	}
	return num / den
}
