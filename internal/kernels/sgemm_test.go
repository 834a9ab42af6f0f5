package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// refGemm is the float64 reference: C = alpha·op(A)·op(B) + beta·C.
func refGemm(ta, tb bool, m, n, k int, alpha float64, a []float32, lda int, b []float32, ldb int, beta float64, c []float32, ldc int) []float64 {
	// op(A) as [m][k] and op(B)ᵀ as [n][k] in float64, so the dot products are contiguous.
	A := make([]float64, m*k)
	Bt := make([]float64, n*k)
	for i := 0; i < m; i++ {
		for p := 0; p < k; p++ {
			if ta {
				A[i*k+p] = float64(a[p*lda+i])
			} else {
				A[i*k+p] = float64(a[i*lda+p])
			}
		}
	}
	for j := 0; j < n; j++ {
		for p := 0; p < k; p++ {
			if tb {
				Bt[j*k+p] = float64(b[j*ldb+p])
			} else {
				Bt[j*k+p] = float64(b[p*ldb+j])
			}
		}
	}
	out := make([]float64, m*n)
	for i := 0; i < m; i++ {
		ai := A[i*k : i*k+k]
		for j := 0; j < n; j++ {
			bj := Bt[j*k : j*k+k]
			var s float64
			for p, x := range ai {
				s += x * bj[p]
			}
			v := alpha * s
			if beta != 0 {
				v += beta * float64(c[i*ldc+j])
			}
			out[i*n+j] = v
		}
	}
	return out
}

type gemmCase struct {
	ta, tb      bool
	m, n, k     int
	alpha, beta float32
	pad         int // extra stride
}

// checkGemm runs one case on every dispatch path in paths (all of them if
// nil) against one float64 reference.
func checkGemm(t *testing.T, r *rand.Rand, tc gemmCase, paths []string) {
	t.Helper()
	ar, ac := tc.m, tc.k
	if tc.ta {
		ar, ac = tc.k, tc.m
	}
	br, bc := tc.k, tc.n
	if tc.tb {
		br, bc = tc.n, tc.k
	}
	lda, ldb, ldc := ac+tc.pad, bc+tc.pad, tc.n+tc.pad
	a := randSlice(r, max(ar*lda, 1), 1)
	b := randSlice(r, max(br*ldb, 1), 1)
	c0 := randSlice(r, max(tc.m*ldc, 1), 1)
	if tc.beta == 0 {
		for i := range c0 {
			c0[i] = float32(math.NaN()) // beta == 0 must not read C
		}
	}
	want := refGemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, float64(tc.alpha), a, lda, b, ldb, float64(tc.beta), c0, ldc)
	// float32 accumulation of k products of numbers in [-1,1].
	tol := 4e-6 * math.Sqrt(float64(tc.k)+1)
	c := make([]float32, len(c0))
	if paths == nil {
		paths = Paths()
	}
	for _, p := range paths {
		old, _ := SetPath(p)
		copy(c, c0)
		Sgemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)
		SetPath(old)
		for i := 0; i < tc.m; i++ {
			for j := 0; j < ldc; j++ {
				got := c[i*ldc+j]
				if j >= tc.n { // padding must be untouched
					if math.Float32bits(got) != math.Float32bits(c0[i*ldc+j]) {
						t.Fatalf("%s %+v: C[%d,%d] (padding) written", p, tc, i, j)
					}
					continue
				}
				w := want[i*tc.n+j]
				if e := math.Abs(float64(got)-w) / (1 + math.Abs(w)); !(e <= tol) { // NaN-safe
					t.Fatalf("%s %+v: C[%d,%d] = %v, want %v", p, tc, i, j, got, w)
				}
			}
		}
	}
}

// TestSgemmSizes covers all layouts, the odd sizes 1..257 for m, n, k
// (products up to 257·257·65), three alpha/beta pairs and padded strides,
// on every dispatch path.
func TestSgemmSizes(t *testing.T) {
	sizes := []int{1, 3, 7, 17, 33, 65, 257}
	r := rand.New(rand.NewSource(1))
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			for _, m := range sizes {
				for _, n := range sizes {
					for _, k := range sizes {
						if m*n*k > 257*257*65 {
							continue // the 257 cube is in TestSgemmLarge
						}
						for _, ab := range [][2]float32{{1, 0}, {1, 1}, {-0.5, 0.25}} {
							pad := 0
							if (m+n+k)%3 == 0 {
								pad = 5
							}
							checkGemm(t, r, gemmCase{ta, tb, m, n, k, ab[0], ab[1], pad}, nil)
						}
					}
				}
			}
		}
	}
}

// TestSgemmLarge covers sizes up to 1000 in each dimension, all layouts,
// every dispatch path.
func TestSgemmLarge(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			for _, tc := range []gemmCase{
				{ta, tb, 257, 257, 257, 1, 1, 3},
				{ta, tb, 1000, 65, 33, 1, 0, 0},
				{ta, tb, 33, 1000, 65, 1, 0, 0},
				{ta, tb, 65, 33, 1000, 1, 1, 0},
				{ta, tb, 1000, 1000, 1000, 1, 0, 0},
				{ta, tb, 1000, 257, 1000, -1, 1, 1},
			} {
				checkGemm(t, r, tc, nil)
			}
		}
	}
}

func TestSgemmThreads(t *testing.T) {
	// the same result with 1, 2 and 3 threads (the split must not matter)
	r := rand.New(rand.NewSource(3))
	for _, th := range []int{1, 2, 3} {
		old := SetThreads(th)
		for _, tc := range []gemmCase{{false, false, 300, 200, 100, 1, 0, 1}, {true, true, 130, 700, 90, 2, 1, 0}} {
			checkGemm(t, r, tc, nil)
		}
		SetThreads(old)
	}
}

func TestSgemmZeroK(t *testing.T) {
	c := []float32{1, 2, 3, 4}
	Sgemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0.5, c, 2)
	if fmt.Sprint(c) != "[0.5 1 1.5 2]" {
		t.Fatal(c)
	}
	Sgemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0, c, 2)
	if fmt.Sprint(c) != "[0 0 0 0]" {
		t.Fatal(c)
	}
}

// TestSgemmAliasedStride: A's rows exactly 4 KiB (and 8 KiB) apart, where
// Sgemm copies each A block to a padded stride (aliasedStride), across M,
// N and K blocks, ragged edges, both A layouts and 1 and 2 threads.
func TestSgemmAliasedStride(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	for _, th := range []int{1, 2} {
		old := SetThreads(th)
		for _, tc := range []gemmCase{
			{false, false, 400, 70, 300, 1, 0, 1024 - 300},
			{false, true, 401, 97, 300, 1, 1, 1024 - 300},
			{false, false, 45, 600, 1000, -0.5, 0.25, 2048 - 1000},
			{true, false, 300, 70, 20, 1, 0, 1024 - 300}, // Aᵀ: read in place
		} {
			if !tc.ta && !aliasedStride(tc.k+tc.pad, 4) {
				t.Fatalf("case %+v: lda %d is not 4 KiB-aliased", tc, tc.k+tc.pad)
			}
			checkGemm(t, r, tc, nil)
		}
		SetThreads(old)
	}
}
