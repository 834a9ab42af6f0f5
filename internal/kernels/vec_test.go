package kernels

import (
	"math"
	"math/rand"
	"testing"
)

func TestVecOps(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(4))
		for _, n := range []int{1, 3, 7, 15, 16, 17, 31, 33, 65, 257, 1000} {
			x := randSlice(r, n, 30)
			x[0] = -200 // underflow clamp
			if n > 2 {
				x[2] = 80
			}
			if n%2 == 1 {
				x[n-1] = 85 // the largest value in the tail
			}
			// max
			want := float32(math.Inf(-1))
			for _, v := range x {
				want = max(want, v)
			}
			if got := maxf(x); got != want {
				t.Fatalf("n=%d max %v want %v", n, got, want)
			}
			if got := maxf(append(x, 1000)[:n]); got != want { // a larger value just past the slice
				t.Fatalf("n=%d max read past its slice: %v want %v", n, got, want)
			}
			// exp
			// y's backing array runs 16 sentinels past n: a tail that is
			// done under a lane mask must neither read nor write them.
			yb := append(append([]float32(nil), x...), make([]float32, 16)...)
			for i := n; i < len(yb); i++ {
				yb[i] = float32(math.NaN())
			}
			y := yb[:n]
			s := expSubSum(y, 1.5)
			for i := n; i < len(yb); i++ {
				if !math.IsNaN(float64(yb[i])) {
					t.Fatalf("n=%d expSubSum wrote past its slice at %d: %v", n, i, yb[i])
				}
			}
			var ws float64
			for i, v := range x {
				e := math.Exp(float64(v - 1.5)) // the argument rounds to float32 first
				ws += e
				if d := math.Abs(float64(y[i])-e) / e; e > 1e-37 && d > 5e-7 {
					t.Fatalf("n=%d exp(%v) = %v want %v (rel %g)", n, v-1.5, y[i], e, d)
				}
			}
			if d := math.Abs(float64(s) - ws); d > 1e-6*ws+1e-37 {
				t.Fatalf("n=%d sum %v want %v", n, s, ws)
			}
			// n zeros: exactly n ones, so no lane past n may add to the sum
			if s := expSubSum(make([]float32, n), 0); s != float32(n) {
				t.Fatalf("n=%d: sum of exp(0) over n zeros = %v", n, s)
			}
			// gelu
			x = randSlice(r, n, 6)
			g := make([]float32, n)
			geluFwd(g, x)
			dy := randSlice(r, n, 1)
			dx := make([]float32, n)
			geluBwd(dx, x, dy)
			for i, v := range x {
				xv := float64(v)
				sg := 1 / (1 + math.Exp(-1.702*xv))
				if d := math.Abs(float64(g[i]) - xv*sg); d > 1e-6*(1+math.Abs(xv)) {
					t.Fatalf("gelu(%v) = %v want %v", v, g[i], xv*sg)
				}
				wd := float64(dy[i]) * (sg + 1.702*xv*sg*(1-sg))
				if d := math.Abs(float64(dx[i]) - wd); d > 1e-6*(1+math.Abs(wd)) {
					t.Fatalf("gelu'(%v) = %v want %v", v, dx[i], wd)
				}
			}
		}
	})
}

// TestSubMulPathsAgree: every path's subMul gives the Go loop's bits and
// writes nothing past its slice.
func TestSubMulPathsAgree(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 33, 255} {
		r := rand.New(rand.NewSource(int64(n)))
		s0, p := randSlice(r, n+16, 1), randSlice(r, n, 1)
		run := func(path string) []float32 {
			old, err := SetPath(path)
			if err != nil {
				t.Fatal(err)
			}
			defer SetPath(old)
			s := append([]float32(nil), s0...)
			subMul(s[:n], p, 0.375)
			return s
		}
		want := run("generic")
		for i := 0; i < n; i++ {
			if w := s0[i] * (p[i] - 0.375); want[i] != w {
				t.Fatalf("generic n=%d i=%d: %v want %v", n, i, want[i], w)
			}
		}
		for _, path := range Paths() {
			got := run(path)
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s n=%d i=%d: %v, generic %v (past n: written)", path, n, i, got[i], want[i])
				}
			}
		}
	}
}
