package probe

import (
	"math"
	"slices"

	"github.com/igpt/igpt/internal/kernels"
	"gonum.org/v1/gonum/optimize"
)

// objective evaluates f and ∇f for a fixed data set. Parameters are laid out
// as [W (K×D row-major), b (K)], in float64 for the optimiser. One
// evaluation is two float32 GEMMs on internal/kernels' SGEMM (which runs on
// the kernels' worker pool): the logits Zᵀ = W·Xᵀ and the weight gradient
// ∇W = Gᵀ·X + λW, with G = (P − onehot)/n. The softmax, the loss and the
// bias gradient are summed in float64. Every buffer is allocated once, so
// an evaluation does not allocate; every sum is taken in a fixed order, so
// the same inputs give the same bits.
type objective struct {
	x       *Matrix
	y       []int
	n, d, k int
	lambda  float64

	w32  []float32 // K×D: W rounded to float32
	zt   []float32 // K×n: logits, class-major
	g    []float32 // n×K: the residual G = (P − onehot)/n
	gw32 []float32 // K×D: Gᵀ·X
	gb   []float64 // K: Σᵢ G[i, ·] in float64
	e    []float64 // K: one row's exponentials

	// The gonum Problem asks for f and ∇f at the same x in separate calls;
	// one pass computes both, and Grad reuses it when x is unchanged.
	lastX    []float64
	lastGrad []float64
	lastF    float64
	haveLast bool
	evals    int
}

func newObjective(x *Matrix, y []int, k int, lambda float64) *objective {
	n, d := x.Rows, x.Cols
	return &objective{
		x: x, y: y, n: n, d: d, k: k, lambda: lambda,
		w32: make([]float32, k*d), zt: make([]float32, k*n), g: make([]float32, n*k),
		gw32: make([]float32, k*d), gb: make([]float64, k), e: make([]float64, k),
	}
}

func (o *objective) dim() int { return o.k*o.d + o.k }

// evalBlock is the number of rows of X per step of an evaluation: the
// logits of a block, its softmax and its share of the gradient are computed
// while the block (evalBlock·D·4 bytes) is still in cache, so X streams from
// memory once per evaluation instead of once per GEMM.
const evalBlock = 256

// eval returns f(params) and, when grad is not nil, writes ∇f into it.
func (o *objective) eval(params, grad []float64) float64 {
	o.evals++
	n, d, k := o.n, o.d, o.k
	w, b := params[:k*d], params[k*d:]
	for i, v := range w {
		o.w32[i] = float32(v)
	}
	clear(o.gb)
	loss := 0.0
	for r0 := 0; r0 < n; r0 += evalBlock {
		rows := min(evalBlock, n-r0)
		xb := o.x.Data[r0*d:]
		// Zᵀ[K, rows] = W[K, D]·X[rows, D]ᵀ (columns r0.. of Zᵀ[K, n]).
		kernels.Sgemm(false, true, k, rows, d, 1, o.w32, d, xb, d, 0, o.zt[r0:], n)
		loss += o.softmax(b, r0, r0+rows)
		if grad != nil {
			// ∇W[K, D] += G[rows, K]ᵀ·X[rows, D], blocks added in order.
			beta := float32(1)
			if r0 == 0 {
				beta = 0
			}
			kernels.Sgemm(true, false, k, d, rows, 1, o.g[r0*k:], k, xb, d, beta, o.gw32, d)
		}
	}
	ww := 0.0
	for _, v := range w {
		ww += v * v
	}
	f := loss/float64(n) + 0.5*o.lambda*ww
	if grad == nil {
		return f
	}
	for i, v := range o.gw32 {
		grad[i] = float64(v) + o.lambda*w[i]
	}
	copy(grad[k*d:], o.gb)
	return f
}

// softmax turns the logits Zᵀ + b of rows i0..i1-1 into the residual
// G = (P − onehot)/n, adds their share of the bias gradient Σᵢ G[i, ·], and
// returns their Σᵢ CE, all in float64 (G is stored rounded to float32 for
// the gradient's GEMM).
func (o *objective) softmax(b []float64, i0, i1 int) float64 {
	n, k := o.n, o.k
	invN := 1 / float64(n)
	e := o.e
	loss := 0.0
	for i := i0; i < i1; i++ {
		m := math.Inf(-1)
		for j := 0; j < k; j++ {
			e[j] = float64(o.zt[j*n+i]) + b[j]
			m = max(m, e[j])
		}
		yi := o.y[i]
		zy := e[yi]
		s := 0.0
		for j := range e {
			e[j] = math.Exp(e[j] - m)
			s += e[j]
		}
		loss += m + math.Log(s) - zy
		gi := o.g[i*k : (i+1)*k]
		for j := range e {
			p := e[j] / s
			if j == yi {
				p--
			}
			p *= invN
			gi[j] = float32(p)
			o.gb[j] += p
		}
	}
	return loss
}

func (o *objective) problem() optimize.Problem {
	o.lastX = make([]float64, o.dim())
	o.lastGrad = make([]float64, o.dim())
	return optimize.Problem{
		Func: func(p []float64) float64 {
			o.lastF = o.eval(p, o.lastGrad)
			copy(o.lastX, p)
			o.haveLast = true
			return o.lastF
		},
		Grad: func(g, p []float64) {
			if !o.haveLast || !slices.Equal(p, o.lastX) {
				o.lastF = o.eval(p, o.lastGrad)
				copy(o.lastX, p)
				o.haveLast = true
			}
			copy(g, o.lastGrad)
		},
	}
}
