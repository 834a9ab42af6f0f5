package kernels

import (
	"math"
	"math/rand"
	"testing"
)

func TestVecOps(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(4))
		for _, n := range []int{1, 3, 7, 17, 33, 65, 257, 1000} {
			x := randSlice(r, n, 30)
			x[0] = -200 // underflow clamp
			if n > 2 {
				x[2] = 80
			}
			// max
			want := float32(math.Inf(-1))
			for _, v := range x {
				want = max(want, v)
			}
			if got := maxf(x); got != want {
				t.Fatalf("n=%d max %v want %v", n, got, want)
			}
			// exp
			y := append([]float32(nil), x...)
			s := expSubSum(y, 1.5)
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
