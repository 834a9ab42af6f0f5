package kernels

import "fmt"

// 2-D convolution in NHWC float32, by im2col and SGEMM.
//
// Layouts: activations are [N, H, W, C] (batch, rows, columns, channels);
// a convolution's weight is [KH, KW, C, OC] (TensorFlow's HWIO), which is
// the row-major matrix [KH·KW·C, OC]; its bias is [OC]. im2col turns the
// input into the matrix col[N·OH·OW, KH·KW·C] (zero where the window
// leaves the padded image), so that
//
//	out[N·OH·OW, OC] = col · w + b
//
// A transposed convolution is the adjoint of a convolution: with the same
// geometry and weight it maps [N, OH, OW, OC] back to [N, H, W, C]. In
// PyTorch terms, the weight of both is w.permute(3, 2, 0, 1).
//
// The caller provides the scratch col (ConvGeom.ColLen floats, not needed
// for 1×1 stride-1 unpadded convolutions, which read the input in place);
// nothing allocates in steady state. Backward functions accumulate (+=)
// into the weight and bias gradients; the input gradient is overwritten
// unless accumulate is set.

// ConvGeom is the geometry of one convolution: input [N, H, W, C], KH×KW
// kernel, Stride, zero padding Pad on every side, OC output channels.
type ConvGeom struct {
	N, H, W, C int
	OC         int
	KH, KW     int
	Stride     int
	Pad        int
}

// Out returns the output's rows and columns, ⌊(H + 2·Pad − KH)/Stride⌋ + 1
// and likewise for W.
func (g ConvGeom) Out() (oh, ow int) {
	return (g.H+2*g.Pad-g.KH)/g.Stride + 1, (g.W+2*g.Pad-g.KW)/g.Stride + 1
}

// InLen is the length of the input [N, H, W, C].
func (g ConvGeom) InLen() int { return g.N * g.H * g.W * g.C }

// OutLen is the length of the output [N, OH, OW, OC].
func (g ConvGeom) OutLen() int { oh, ow := g.Out(); return g.N * oh * ow * g.OC }

// WeightLen is the length of the weight [KH, KW, C, OC].
func (g ConvGeom) WeightLen() int { return g.KH * g.KW * g.C * g.OC }

// ColLen is the length of the im2col scratch [N·OH·OW, KH·KW·C] (0 for a
// 1×1, stride-1, unpadded convolution, which needs none).
func (g ConvGeom) ColLen() int {
	if g.direct() {
		return 0
	}
	oh, ow := g.Out()
	return g.N * oh * ow * g.KH * g.KW * g.C
}

// direct reports whether the input is its own im2col matrix.
func (g ConvGeom) direct() bool { return g.KH == 1 && g.KW == 1 && g.Stride == 1 && g.Pad == 0 }

func (g ConvGeom) check(col []float32) {
	oh, ow := g.Out()
	if g.N < 1 || g.H < 1 || g.W < 1 || g.C < 1 || g.OC < 1 || g.KH < 1 || g.KW < 1 || g.Stride < 1 || g.Pad < 0 || oh < 1 || ow < 1 {
		panic(fmt.Sprintf("kernels: bad convolution geometry %+v", g))
	}
	need("col", col, g.ColLen())
}

// Conv2DForward computes out[N, OH, OW, OC] = conv(x[N, H, W, C], w) + b
// (b may be nil).
func Conv2DForward(out, x, w, b, col []float32, g ConvGeom) {
	g.check(col)
	need("x", x, g.InLen())
	need("w", w, g.WeightLen())
	need("out", out, g.OutLen())
	oh, ow := g.Out()
	M, K := g.N*oh*ow, g.KH*g.KW*g.C
	a := x
	if !g.direct() {
		im2col(col, x, g)
		a = col
	}
	MatMul(out, a, w, M, g.OC, K, false) // [M, K]·[K, OC]
	if b != nil {
		AddBias(out, b, M, g.OC)
	}
}

// Conv2DBackward is the backward pass of Conv2DForward:
//
//	dw[K, OC] += colᵀ · dout;  db[OC] += Σ_rows dout;  dx = col2im(dout · wᵀ)
//
// dx (overwritten, or += with accumulate) and db may be nil.
func Conv2DBackward(dx, dw, db, dout, x, w, col []float32, g ConvGeom, accumulate bool) {
	g.check(col)
	need("x", x, g.InLen())
	need("w", w, g.WeightLen())
	need("dw", dw, g.WeightLen())
	need("dout", dout, g.OutLen())
	oh, ow := g.Out()
	M, K := g.N*oh*ow, g.KH*g.KW*g.C
	if db != nil {
		BiasBackward(db, dout, M, g.OC)
	}
	if g.direct() {
		MatMulTN(dw, x, dout, K, g.OC, M, true)
		if dx != nil {
			need("dx", dx, g.InLen())
			MatMulNT(dx, dout, w, M, K, g.OC, accumulate)
		}
		return
	}
	im2col(col, x, g)
	MatMulTN(dw, col, dout, K, g.OC, M, true) // [M, K]ᵀ·[M, OC]
	if dx == nil {
		return
	}
	need("dx", dx, g.InLen())
	MatMulNT(col, dout, w, M, K, g.OC, false) // dcol [M, K] = dout·wᵀ
	col2im(dx, col, g, accumulate)
}

// ConvTranspose2DForward is the transposed convolution of geometry g:
// out[N, H, W, C] = convᵀ(x[N, OH, OW, OC], w) + b, with w [KH, KW, C, OC]
// and b [C] (may be nil). It is Conv2DBackward's input gradient.
func ConvTranspose2DForward(out, x, w, b, col []float32, g ConvGeom) {
	g.check(col)
	need("x", x, g.OutLen())
	need("w", w, g.WeightLen())
	need("out", out, g.InLen())
	oh, ow := g.Out()
	M, K := g.N*oh*ow, g.KH*g.KW*g.C
	if g.direct() {
		MatMulNT(out, x, w, M, K, g.OC, false)
	} else {
		MatMulNT(col, x, w, M, K, g.OC, false) // col [M, K] = x·wᵀ
		col2im(out, col, g, false)
	}
	if b != nil {
		AddBias(out, b, g.N*g.H*g.W, g.C)
	}
}

// ConvTranspose2DBackward is the backward pass of ConvTranspose2DForward:
//
//	col = im2col(dout);  dx[M, OC] = col · w;  dw[K, OC] += colᵀ · x;
//	db[C] += Σ_rows dout
//
// dx (overwritten, or += with accumulate) and db may be nil.
func ConvTranspose2DBackward(dx, dw, db, dout, x, w, col []float32, g ConvGeom, accumulate bool) {
	g.check(col)
	need("x", x, g.OutLen())
	need("w", w, g.WeightLen())
	need("dw", dw, g.WeightLen())
	need("dout", dout, g.InLen())
	oh, ow := g.Out()
	M, K := g.N*oh*ow, g.KH*g.KW*g.C
	if db != nil {
		BiasBackward(db, dout, g.N*g.H*g.W, g.C)
	}
	c := dout
	if !g.direct() {
		im2col(col, dout, g)
		c = col
	}
	if dx != nil {
		need("dx", dx, g.OutLen())
		MatMul(dx, c, w, M, g.OC, K, accumulate)
	}
	MatMulTN(dw, c, x, K, g.OC, M, true)
}

// AddBias adds b[C] to every row of x[M, C].
func AddBias(x, b []float32, M, C int) {
	need("x", x, M*C)
	need("b", b, C)
	tasks := chunks(M, C)
	do(&theConv, convJob{op: opBias, dst: x, src: b, m: M, c: C, t: tasks}, tasks)
}

// BiasBackward accumulates the column sums of dy[M, C] into db[C].
func BiasBackward(db, dy []float32, M, C int) {
	need("dy", dy, M*C)
	need("db", db, C)
	for i := 0; i < M; i++ {
		row := dy[i*C : i*C+C]
		for j, v := range row {
			db[j] += v
		}
	}
}

// ReLUForward computes y = max(x, 0) element-wise (y may alias x).
func ReLUForward(y, x []float32) {
	need("y", y, len(x))
	n := len(x)
	do(&theConv, convJob{op: opReLU, dst: y, src: x, m: n, t: chunks(n, 1)}, chunks(n, 1))
}

// ReLUBackward computes dx = dy where y > 0, else 0 (y is the forward
// output, or its input: the sign is the same). With accumulate, dx += …;
// otherwise dx is overwritten and may alias dy.
func ReLUBackward(dx, y, dy []float32, accumulate bool) {
	n := len(y)
	need("dx", dx, n)
	need("dy", dy, n)
	op := opReLUBwd
	if accumulate {
		op = opReLUBwdAcc
	}
	do(&theConv, convJob{op: op, dst: dx, src: dy, aux: y, m: n, t: chunks(n, 1)}, chunks(n, 1))
}

// im2col fills col[N·OH·OW, KH·KW·C] from x[N, H, W, C], in parallel over
// output rows.
func im2col(col, x []float32, g ConvGeom) {
	oh, _ := g.Out()
	rows := g.N * oh
	tasks := chunks(rows, g.ColLen()/rows)
	do(&theConv, convJob{op: opIm2col, dst: col, src: x, g: g, t: tasks, m: rows}, tasks)
}

// col2im scatter-adds col[N·OH·OW, KH·KW·C] into x[N, H, W, C] (cleared
// first unless accumulate), in parallel over images.
func col2im(x, col []float32, g ConvGeom, accumulate bool) {
	tasks := min(g.N, 4*thePool.threads)
	if g.ColLen() < 1<<15 {
		tasks = 1
	}
	do(&theConv, convJob{op: opCol2im, dst: x, src: col, g: g, acc: accumulate, t: tasks, m: g.N}, tasks)
}

const (
	opIm2col = iota
	opCol2im
	opBias
	opReLU
	opReLUBwd
	opReLUBwdAcc
)

// convJob is every element-wise or gather/scatter pass of this file: op
// selects which; rows [0, m) are cut into t tasks.
type convJob struct {
	op            int
	dst, src, aux []float32
	g             ConvGeom
	acc           bool
	m, c, t       int
}

var theConv convJob

func (j *convJob) run(t, _ int) {
	lo, hi := span(t, j.t, j.m)
	switch j.op {
	case opIm2col:
		j.im2col(lo, hi)
	case opCol2im:
		j.col2im(lo, hi)
	case opBias:
		b := j.src[:j.c]
		for i := lo; i < hi; i++ {
			row := j.dst[i*j.c : i*j.c+j.c]
			for k := range row {
				row[k] += b[k]
			}
		}
	case opReLU:
		y, x := j.dst[lo:hi], j.src[lo:hi]
		for i, v := range x {
			y[i] = max(v, 0)
		}
	case opReLUBwd, opReLUBwdAcc:
		dx, dy, y := j.dst[lo:hi], j.src[lo:hi], j.aux[lo:hi]
		acc := j.op == opReLUBwdAcc
		for i, v := range y {
			d := dy[i]
			if v <= 0 {
				d = 0
			}
			if acc {
				dx[i] += d
			} else {
				dx[i] = d
			}
		}
	}
}

// im2col for output rows r in [lo, hi), r = n·OH + oy.
func (j *convJob) im2col(lo, hi int) {
	g := j.g
	oh, ow := g.Out()
	C, KW := g.C, g.KW
	K := g.KH * KW * C
	x := j.src
	for r := lo; r < hi; r++ {
		n, oy := r/oh, r%oh
		img := x[n*g.H*g.W*C : (n+1)*g.H*g.W*C]
		for ox := 0; ox < ow; ox++ {
			dst := j.dst[(r*ow+ox)*K : (r*ow+ox+1)*K]
			x0 := ox*g.Stride - g.Pad
			for ky := 0; ky < g.KH; ky++ {
				iy := oy*g.Stride - g.Pad + ky
				seg := dst[ky*KW*C : (ky+1)*KW*C]
				if iy < 0 || iy >= g.H {
					clear(seg)
					continue
				}
				src := img[iy*g.W*C : (iy+1)*g.W*C]
				if x0 >= 0 && x0+KW <= g.W {
					copy(seg, src[x0*C:(x0+KW)*C])
					continue
				}
				for kx := 0; kx < KW; kx++ {
					ix := x0 + kx
					if ix < 0 || ix >= g.W {
						clear(seg[kx*C : kx*C+C])
					} else {
						copy(seg[kx*C:kx*C+C], src[ix*C:ix*C+C])
					}
				}
			}
		}
	}
}

// col2im for images n in [lo, hi).
func (j *convJob) col2im(lo, hi int) {
	g := j.g
	oh, ow := g.Out()
	C, KW := g.C, g.KW
	K := g.KH * KW * C
	for n := lo; n < hi; n++ {
		img := j.dst[n*g.H*g.W*C : (n+1)*g.H*g.W*C]
		if !j.acc {
			clear(img)
		}
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				r := (n*oh+oy)*ow + ox
				src := j.src[r*K : (r+1)*K]
				x0 := ox*g.Stride - g.Pad
				for ky := 0; ky < g.KH; ky++ {
					iy := oy*g.Stride - g.Pad + ky
					if iy < 0 || iy >= g.H {
						continue
					}
					drow := img[iy*g.W*C : (iy+1)*g.W*C]
					for kx := 0; kx < KW; kx++ {
						ix := x0 + kx
						if ix < 0 || ix >= g.W {
							continue
						}
						d := drow[ix*C : ix*C+C]
						s := src[(ky*KW+kx)*C : (ky*KW+kx)*C+C]
						for c := range d {
							d[c] += s[c]
						}
					}
				}
			}
		}
	}
}
