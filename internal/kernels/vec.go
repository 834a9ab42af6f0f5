package kernels

import "math"

// vecOps are the vectorised element-wise routines of a path; each handles
// n rounded down to a multiple of width and leaves the tail to Go, except
// expSubSum and max where anyN is set: those take any n (the avx512 path
// does the tail under a lane mask, so a causal attention row's last
// n mod 16 scores cost no scalar exps).
type vecOps struct {
	width     int
	anyN      bool
	expSubSum func(x *float32, n int, sub float32) float32
	max       func(x *float32, n int) float32
	geluFwd   func(y, x *float32, n int)
	geluBwd   func(dx, x, dy *float32, n int)
	rms       *rmsOps // nil: RMS norm rows in Go
	// adam, if not nil, is adamJob's loop for any n (c: β1, 1−β1, β2,
	// 1−β2, c1, c2, ε, wd, lr), bit for bit.
	adam func(p, g, m, v *float32, n int, c *[9]float32)
	// subMul, if not nil, sets s = s·(p − d) for any n, bit for bit as
	// subMul's loop.
	subMul func(s, p *float32, n int, d float32)
}

// subMul sets s[i] = s[i]·(p[i] − d) (attention's dS = P ∘ (dP − D)).
func subMul(s, p []float32, d float32) {
	if len(s) == 0 {
		return
	}
	p = p[:len(s)]
	if v := cur.vec; v != nil && v.subMul != nil {
		v.subMul(&s[0], &p[0], len(s), d)
		return
	}
	for c := range s {
		s[c] *= p[c] - d
	}
}

// rmsOps are a path's RMS norm rows, for any n (see rmsFuncs in asm/gen.go).
type rmsOps struct {
	sumSq    func(x *float32, n int) float32
	scaleMul func(o, x, g *float32, n int, r float32)
	bwdDot   func(part, x, dy, g *float32, n int, r float32) float32
	bwdDx    func(dx, x, dy, g *float32, n int, r, k float32)
}

// Exp32 is e^x in float32 (Cephes expf: the same range reduction and
// polynomial as the assembly, so every path, and callers outside the
// package such as the sampler's attention, round alike to ~1 ulp).
func Exp32(x float32) float32 { return exp32(x) }

func exp32(x float32) float32 {
	if x < -87.336544 {
		x = -87.336544
	} else if x > 88.72284 {
		x = 88.72284
	}
	n := float32(math.RoundToEven(float64(x * 1.44269504)))
	x = x - n*0.693359375
	x = x - n*-2.12194440e-4
	y := float32(1.9875691500e-4)
	y = y*x + 1.3981999507e-3
	y = y*x + 8.3334519073e-3
	y = y*x + 4.1665795894e-2
	y = y*x + 1.6666665459e-1
	y = y*x + 5.0000001201e-1
	y = y*x + 1
	y = y*x + 1
	return y * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// expSubSum sets x[i] = exp(x[i]-sub) and returns the sum.
func expSubSum(x []float32, sub float32) float32 {
	var s float32
	i := 0
	if v := cur.vec; v != nil && v.anyN {
		if len(x) == 0 {
			return 0
		}
		return v.expSubSum(&x[0], len(x), sub)
	}
	if v := cur.vec; v != nil && len(x) >= v.width {
		i = len(x) &^ (v.width - 1)
		s = v.expSubSum(&x[0], i, sub)
	}
	for ; i < len(x); i++ {
		e := exp32(x[i] - sub)
		x[i] = e
		s += e
	}
	return s
}

// maxf returns the largest element of x (len(x) > 0).
func maxf(x []float32) float32 {
	m := x[0]
	i := 0
	if v := cur.vec; v != nil && v.anyN {
		return v.max(&x[0], len(x))
	}
	if v := cur.vec; v != nil && len(x) >= v.width {
		i = len(x) &^ (v.width - 1)
		m = v.max(&x[0], i)
	}
	for ; i < len(x); i++ {
		if x[i] > m {
			m = x[i]
		}
	}
	return m
}

// sigmoid1702 returns σ(1.702x).
func sigmoid1702(x float32) float32 { return 1 / (1 + exp32(-1.702*x)) }

func geluFwd(y, x []float32) {
	i := 0
	if v := cur.vec; v != nil && len(x) >= v.width {
		i = len(x) &^ (v.width - 1)
		v.geluFwd(&y[0], &x[0], i)
	}
	for ; i < len(x); i++ {
		y[i] = x[i] * sigmoid1702(x[i])
	}
}

func geluBwd(dx, x, dy []float32) {
	i := 0
	if v := cur.vec; v != nil && len(x) >= v.width {
		i = len(x) &^ (v.width - 1)
		v.geluBwd(&dx[0], &x[0], &dy[0], i)
	}
	for ; i < len(x); i++ {
		s := sigmoid1702(x[i])
		dx[i] = dy[i] * (s + 1.702*x[i]*s*(1-s))
	}
}
