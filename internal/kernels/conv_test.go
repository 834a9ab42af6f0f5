package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// convCases are odd sizes for every kernel and stride the VQ-VAE uses.
var convCases = []ConvGeom{
	{N: 2, H: 5, W: 7, C: 3, OC: 5, KH: 1, KW: 1, Stride: 1, Pad: 0},
	{N: 3, H: 7, W: 5, C: 4, OC: 6, KH: 3, KW: 3, Stride: 1, Pad: 1},
	{N: 2, H: 9, W: 6, C: 3, OC: 7, KH: 4, KW: 4, Stride: 2, Pad: 1},
	{N: 2, H: 8, W: 8, C: 5, OC: 3, KH: 4, KW: 4, Stride: 2, Pad: 1},
	{N: 1, H: 6, W: 7, C: 2, OC: 3, KH: 3, KW: 3, Stride: 2, Pad: 0},
	{N: 2, H: 5, W: 5, C: 3, OC: 4, KH: 1, KW: 1, Stride: 2, Pad: 0},
	// big enough for the parallel paths (im2col, col2im, GEMM)
	{N: 5, H: 17, W: 15, C: 19, OC: 33, KH: 3, KW: 3, Stride: 1, Pad: 1},
	{N: 6, H: 18, W: 14, C: 17, OC: 21, KH: 4, KW: 4, Stride: 2, Pad: 1},
}

// naiveConv is the float64 definition: out[n,oy,ox,o] = b[o] +
// Σ x[n, oy·s−p+ky, ox·s−p+kx, c]·w[ky,kx,c,o] (zero outside the image).
func naiveConv(x, w, b []float64, g ConvGeom) []float64 {
	oh, ow := g.Out()
	out := make([]float64, g.N*oh*ow*g.OC)
	forTaps(g, func(xi, wi, oi, o int) { out[oi*g.OC+o] += x[xi] * w[wi] })
	if b != nil {
		for i := range out {
			out[i] += b[i%g.OC]
		}
	}
	return out
}

// forTaps calls f for every (input, weight, output pixel, output channel)
// term of the convolution: xi indexes x, wi w, oi the output pixel.
func forTaps(g ConvGeom, f func(xi, wi, oi, o int)) {
	oh, ow := g.Out()
	for n := 0; n < g.N; n++ {
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				oi := (n*oh+oy)*ow + ox
				for ky := 0; ky < g.KH; ky++ {
					iy := oy*g.Stride - g.Pad + ky
					for kx := 0; kx < g.KW; kx++ {
						ix := ox*g.Stride - g.Pad + kx
						if iy < 0 || iy >= g.H || ix < 0 || ix >= g.W {
							continue
						}
						for c := 0; c < g.C; c++ {
							xi := ((n*g.H+iy)*g.W+ix)*g.C + c
							for o := 0; o < g.OC; o++ {
								f(xi, ((ky*g.KW+kx)*g.C+c)*g.OC+o, oi, o)
							}
						}
					}
				}
			}
		}
	}
}

// naiveConvGrads returns the gradients of Σ dout·conv(x, w, b).
func naiveConvGrads(x, w, dout []float64, g ConvGeom) (dx, dw, db []float64) {
	dx = make([]float64, len(x))
	dw = make([]float64, len(w))
	db = make([]float64, g.OC)
	forTaps(g, func(xi, wi, oi, o int) {
		d := dout[oi*g.OC+o]
		dx[xi] += d * w[wi]
		dw[wi] += d * x[xi]
	})
	for i, d := range dout {
		db[i%g.OC] += d
	}
	return
}

func to64(s []float32) []float64 {
	d := make([]float64, len(s))
	for i, v := range s {
		d[i] = float64(v)
	}
	return d
}

func dot64(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// TestNaiveConvGradsFD checks the float64 reference's gradients by central
// differences, so that the kernels are compared with a proven reference.
func TestNaiveConvGradsFD(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, g := range convCases[:6] {
		x := to64(randSlice(r, g.InLen(), 1))
		w := to64(randSlice(r, g.WeightLen(), 1))
		b := to64(randSlice(r, g.OC, 1))
		R := to64(randSlice(r, g.OutLen(), 1))
		dx, dw, db := naiveConvGrads(x, w, R, g)
		loss := func() float64 { return dot64(naiveConv(x, w, b, g), R) }
		for _, p := range []struct {
			name string
			v, d []float64
		}{{"x", x, dx}, {"w", w, dw}, {"b", b, db}} {
			for k := 0; k < 5; k++ {
				i := r.Intn(len(p.v))
				old := p.v[i]
				const h = 1e-5
				p.v[i] = old + h
				lp := loss()
				p.v[i] = old - h
				lm := loss()
				p.v[i] = old
				fd := (lp - lm) / (2 * h)
				if math.Abs(fd-p.d[i]) > 1e-6*(1+math.Abs(fd)) {
					t.Fatalf("%+v d%s[%d]: analytic %g, finite difference %g", g, p.name, i, p.d[i], fd)
				}
			}
		}
	}
}

func TestConv2D(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(2))
		for _, g := range convCases {
			t.Run(fmt.Sprintf("%dx%d_s%d_p%d_%dx%dx%d", g.KH, g.KW, g.Stride, g.Pad, g.H, g.W, g.C), func(t *testing.T) {
				x := randSlice(r, g.InLen(), 1)
				w := randSlice(r, g.WeightLen(), 1)
				b := randSlice(r, g.OC, 1)
				dout := randSlice(r, g.OutLen(), 1)
				col := make([]float32, g.ColLen())
				out := randSlice(r, g.OutLen(), 9) // overwritten
				Conv2DForward(out, x, w, b, col, g)
				want := naiveConv(to64(x), to64(w), to64(b), g)
				if e := relErr(out, want); e > 1e-5 {
					t.Fatalf("forward rel err %g", e)
				}
				wdx, wdw, wdb := naiveConvGrads(to64(x), to64(w), to64(dout), g)
				// gradients accumulate into dw, db; dx is overwritten or accumulated
				for _, acc := range []bool{false, true} {
					dx := randSlice(r, g.InLen(), 1)
					dx0 := to64(dx)
					dw := randSlice(r, g.WeightLen(), 1)
					db := randSlice(r, g.OC, 1)
					dw0, db0 := to64(dw), to64(db)
					Conv2DBackward(dx, dw, db, dout, x, w, col, g, acc)
					if acc {
						checkAcc(t, "dx", dx, dx0, wdx)
					} else {
						checkAcc(t, "dx", dx, nil, wdx)
					}
					checkAcc(t, "dw", dw, dw0, wdw)
					checkAcc(t, "db", db, db0, wdb)
				}
			})
		}
	})
}

func TestConvTranspose2D(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(3))
		for _, g := range convCases {
			t.Run(fmt.Sprintf("%dx%d_s%d_p%d_%dx%dx%d", g.KH, g.KW, g.Stride, g.Pad, g.H, g.W, g.C), func(t *testing.T) {
				x := randSlice(r, g.OutLen(), 1) // [N, OH, OW, OC]
				w := randSlice(r, g.WeightLen(), 1)
				b := randSlice(r, g.C, 1)
				R := randSlice(r, g.InLen(), 1) // gradient of the output [N, H, W, C]
				col := make([]float32, g.ColLen())
				out := randSlice(r, g.InLen(), 9)
				ConvTranspose2DForward(out, x, w, b, col, g)
				// the transposed convolution is the conv's input gradient
				want, _, _ := naiveConvGrads(make([]float64, g.InLen()), to64(w), to64(x), g)
				for i := range want {
					want[i] += float64(b[i%g.C])
				}
				if e := relErr(out, want); e > 1e-5 {
					t.Fatalf("forward rel err %g", e)
				}
				// d/dx Σ R·convᵀ(x) = conv(R); d/dw = conv's dw with input R, dout x
				wdx := naiveConv(to64(R), to64(w), nil, g)
				_, wdw, _ := naiveConvGrads(to64(R), to64(w), to64(x), g)
				wdb := make([]float64, g.C)
				for i, v := range R {
					wdb[i%g.C] += float64(v)
				}
				dx := randSlice(r, g.OutLen(), 1)
				dx0 := to64(dx)
				dw := randSlice(r, g.WeightLen(), 1)
				db := randSlice(r, g.C, 1)
				dw0, db0 := to64(dw), to64(db)
				ConvTranspose2DBackward(dx, dw, db, R, x, w, col, g, true)
				checkAcc(t, "dx", dx, dx0, wdx)
				checkAcc(t, "dw", dw, dw0, wdw)
				checkAcc(t, "db", db, db0, wdb)
			})
		}
	})
}

// checkAcc compares got with base + want (base nil: want alone).
func checkAcc(t *testing.T, name string, got []float32, base, want []float64) {
	t.Helper()
	w := want
	if base != nil {
		w = make([]float64, len(want))
		for i := range w {
			w[i] = base[i] + want[i]
		}
	}
	if len(got) != len(w) {
		t.Fatalf("%s: len %d, want %d", name, len(got), len(w))
	}
	if e := relErr(got, w); e > 1e-5 {
		t.Fatalf("%s: rel err %g", name, e)
	}
}

// TestConvFD checks the float32 kernels end to end by central differences
// of Σ R·conv(x) on a small case (loose tolerance: float32 forward).
func TestConvFD(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(4))
		g := ConvGeom{N: 2, H: 6, W: 5, C: 3, OC: 4, KH: 4, KW: 4, Stride: 2, Pad: 1}
		x := randSlice(r, g.InLen(), 1)
		w := randSlice(r, g.WeightLen(), 1)
		b := randSlice(r, g.OC, 1)
		R := randSlice(r, g.OutLen(), 1)
		col := make([]float32, g.ColLen())
		out := make([]float32, g.OutLen())
		loss := func() float64 {
			Conv2DForward(out, x, w, b, col, g)
			return dot64(to64(out), to64(R))
		}
		dx := make([]float32, g.InLen())
		dw := make([]float32, g.WeightLen())
		db := make([]float32, g.OC)
		Conv2DBackward(dx, dw, db, R, x, w, col, g, false)
		for _, p := range []struct {
			name string
			v, d []float32
		}{{"x", x, dx}, {"w", w, dw}, {"b", b, db}} {
			for k := 0; k < 6; k++ {
				i := r.Intn(len(p.v))
				old := p.v[i]
				const h = 1e-2
				p.v[i] = old + h
				lp := loss()
				p.v[i] = old - h
				lm := loss()
				p.v[i] = old
				fd := (lp - lm) / (2 * h)
				if math.Abs(fd-float64(p.d[i])) > 2e-3*(1+math.Abs(fd)) {
					t.Fatalf("d%s[%d]: analytic %g, finite difference %g", p.name, i, p.d[i], fd)
				}
			}
		}
	})
}

func TestReLU(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	for _, n := range []int{1, 7, 100003} {
		x := randSlice(r, n, 1)
		y := make([]float32, n)
		ReLUForward(y, x)
		dy := randSlice(r, n, 1)
		dx := make([]float32, n)
		ReLUBackward(dx, y, dy, false)
		dxa := randSlice(r, n, 1)
		base := append([]float32(nil), dxa...)
		ReLUBackward(dxa, y, dy, true)
		for i := range x {
			wy, wd := x[i], dy[i]
			if x[i] <= 0 {
				wy, wd = 0, 0
			}
			if y[i] != wy || dx[i] != wd || dxa[i] != base[i]+wd {
				t.Fatalf("n=%d i=%d: x %g y %g dx %g dxacc %g", n, i, x[i], y[i], dx[i], dxa[i])
			}
		}
	}
}

func TestConvNoAllocs(t *testing.T) {
	g := ConvGeom{N: 4, H: 16, W: 16, C: 8, OC: 16, KH: 4, KW: 4, Stride: 2, Pad: 1}
	r := rand.New(rand.NewSource(6))
	x := randSlice(r, g.InLen(), 1)
	w := randSlice(r, g.WeightLen(), 1)
	b := randSlice(r, g.OC, 1)
	out := make([]float32, g.OutLen())
	col := make([]float32, g.ColLen())
	dx, dw, db := make([]float32, g.InLen()), make([]float32, g.WeightLen()), make([]float32, g.OC)
	step := func() {
		Conv2DForward(out, x, w, b, col, g)
		ReLUForward(out, out)
		ReLUBackward(out, out, out, false)
		Conv2DBackward(dx, dw, db, out, x, w, col, g, false)
		ConvTranspose2DForward(dx, out, w, b, col, g)
		ConvTranspose2DBackward(out, dw, b, dx, out, w, col, g, false)
	}
	step()
	if a := testing.AllocsPerRun(5, step); a != 0 {
		t.Fatalf("%v allocations per step, want 0", a)
	}
}
