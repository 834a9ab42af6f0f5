package probe

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/optimize"
)

// Defaults, chosen to match scikit-learn 1.2's LogisticRegression(solver='lbfgs')
// and SciPy's L-BFGS-B underneath it.
const (
	DefaultMaxIter    = 1000    // LogisticRegression max_iter
	DefaultTol        = 1e-4    // LogisticRegression tol (SciPy gtol)
	DefaultFuncRelTol = 2.22e-9 // SciPy L-BFGS-B ftol = factr·eps = 1e7·2.22e-16
	DefaultMemory     = 10      // SciPy L-BFGS-B maxcor
	rowChunk          = 64      // rows per work item in the logits pass
	colBlock          = 64      // columns of W per work item in the gradient pass
	armijo            = 1e-3    // SciPy's dcsrch ftol (sufficient decrease)
	wolfe             = 0.9     // SciPy's dcsrch gtol (curvature)
	minProb           = 1e-300  // floor for p in reported cross-entropies
)

// Options controls a fit. The zero value gives scikit-learn's settings.
type Options struct {
	// MaxIter bounds the L-BFGS iterations (accepted steps), like
	// LogisticRegression's max_iter. 0 means DefaultMaxIter.
	MaxIter int
	// Tol is scikit-learn's tol: the fit stops when the largest absolute
	// entry of the gradient of scikit-learn's objective Σ CE + |W|²/(2C),
	// which is n·f, falls to Tol; that is max|∇f| ≤ Tol/n here.
	// 0 means DefaultTol.
	Tol float64
	// GradTol, when positive, replaces Tol with an absolute threshold on
	// max|∇f| of the mean-scaled objective f.
	GradTol float64
	// FuncRelTol stops the fit when an iteration lowers f by no more than
	// FuncRelTol·max(|f_k|, |f_k+1|, 1/n) (SciPy's ftol test, whose floor of 1
	// on the sum-scaled objective is 1/n here). 0 means DefaultFuncRelTol;
	// negative disables the test.
	FuncRelTol float64
	// Memory is the number of L-BFGS correction pairs. 0 means DefaultMemory.
	Memory int
	// Classes is the number of classes K; labels must lie in [0, K). 0 means
	// max(label)+1 over the training labels.
	Classes int
	// Init warm-starts the fit from these weights (its shape must match);
	// nil starts from zero, like scikit-learn.
	Init *Model
	// Patience, used by SelectL2 only, stops the descent along the λ grid
	// after this many consecutive λ values score below the best validation
	// accuracy so far (0: fit every λ). Accuracy that falls as λ weakens is
	// usually overfitting, which weaker λ values deepen; the stop saves
	// their fits, the slowest of the grid, at the risk of missing a later
	// rise (the report names the λ it skipped).
	Patience int
	// Workers bounds the goroutines of one evaluation; 0 means GOMAXPROCS.
	// The result does not depend on it.
	Workers int
	// Logger receives debug lines; nil means slog.Default().
	Logger *slog.Logger
	// Progress, if set, is told of each λ fitted (1) or skipped (the
	// count) by SelectL2: for a progress bar.
	Progress func(fits int)
}

func (o Options) progress(n int) {
	if o.Progress != nil {
		o.Progress(n)
	}
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// maxIter is MaxIter with its default applied.
func (o Options) maxIter() int {
	if o.MaxIter > 0 {
		return o.MaxIter
	}
	return DefaultMaxIter
}

func (o Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// Model is a fitted multinomial logistic regression: the score of class k for
// a feature row x is W[k]·x + B[k].
type Model struct {
	Classes int       `json:"classes"`
	Dim     int       `json:"dim"`
	W       []float64 `json:"w"` // Classes×Dim, row-major (scikit-learn's coef_)
	B       []float64 `json:"b"` // Classes (intercept_)
}

// FitResult is the outcome of Fit.
type FitResult struct {
	Model *Model
	// Lambda is the L2 strength λ of the objective; C = 1/(λ·n) the
	// equivalent scikit-learn C for the n training rows.
	Lambda, C float64
	// Iterations counts accepted L-BFGS steps (SciPy's nit); Evaluations
	// counts objective+gradient evaluations.
	Iterations, Evaluations int
	// Converged is false when the fit stopped at MaxIter or the line search
	// failed before either tolerance was met (scikit-learn's
	// ConvergenceWarning cases).
	Converged bool
	// Status is gonum's termination status, or the line-search error.
	Status string
	// Objective is f at the returned weights; GradNorm is max|∇f| there.
	Objective, GradNorm float64
	// Seconds is the wall time of the fit.
	Seconds float64
}

// LambdaFromC converts scikit-learn's C for n training rows to λ = 1/(C·n).
func LambdaFromC(c float64, n int) float64 { return 1 / (c * float64(n)) }

// CFromLambda converts λ for n training rows to scikit-learn's C = 1/(λ·n).
func CFromLambda(lambda float64, n int) float64 { return 1 / (lambda * float64(n)) }

var impl gonum.Implementation

// parallelFor runs fn(0..n-1) on at most workers goroutines. Each index must
// write disjoint memory, so the result does not depend on the schedule.
func parallelFor(workers, n int, fn func(i int)) {
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// objective evaluates f and ∇f for a fixed data set. Parameters are laid out
// as [W (K×D row-major), b (K)]. Buffers are allocated once.
type objective struct {
	x       *Matrix
	y       []int
	n, d, k int
	lambda  float64
	workers int
	chunks  int

	resid     []float64 // n×K: logits, then (P − onehot)/n after a pass
	chunkLoss []float64 // per row chunk: Σ CE over the chunk
	chunkBias []float64 // per row chunk: Σ residuals per class

	// The gonum Problem asks for f and ∇f at the same x in separate calls;
	// one pass computes both, and Grad reuses it when x is unchanged.
	lastX    []float64
	lastGrad []float64
	lastF    float64
	haveLast bool
	evals    int
}

func newObjective(x *Matrix, y []int, k int, lambda float64, workers int) *objective {
	chunks := (x.Rows + rowChunk - 1) / rowChunk
	return &objective{
		x: x, y: y, n: x.Rows, d: x.Cols, k: k, lambda: lambda, workers: workers, chunks: chunks,
		resid:     make([]float64, x.Rows*k),
		chunkLoss: make([]float64, chunks),
		chunkBias: make([]float64, chunks*k),
	}
}

func (o *objective) dim() int { return o.k*o.d + o.k }

// eval returns f(params) and, when grad is not nil, writes ∇f into it.
func (o *objective) eval(params, grad []float64) float64 {
	o.evals++
	n, d, k := o.n, o.d, o.k
	w, b := params[:k*d], params[k*d:]
	invN := 1 / float64(n)
	x := o.x.Data

	// Pass 1, over row chunks: logits = X·Wᵀ + b, softmax, cross-entropy and
	// the residual G = (P − onehot)/n, written over the logits.
	parallelFor(o.workers, o.chunks, func(c int) {
		r0 := c * rowChunk
		r1 := min(r0+rowChunk, n)
		rows := r1 - r0
		z := o.resid[r0*k : r1*k]
		// rows ≤ 64: gonum runs this GEMM serially for K ≤ 192.
		impl.Dgemm(blas.NoTrans, blas.Trans, rows, k, d, 1, x[r0*d:], d, w, d, 0, z, k)
		bg := o.chunkBias[c*k : (c+1)*k]
		clear(bg)
		loss := 0.0
		for i := 0; i < rows; i++ {
			zi := z[i*k : (i+1)*k]
			m := math.Inf(-1)
			for j := range zi {
				zi[j] += b[j]
				if zi[j] > m {
					m = zi[j]
				}
			}
			s := 0.0
			for j := range zi {
				s += math.Exp(zi[j] - m)
			}
			lse := m + math.Log(s)
			yi := o.y[r0+i]
			loss += lse - zi[yi]
			for j := range zi {
				g := math.Exp(zi[j] - lse)
				if j == yi {
					g -= 1
				}
				g *= invN
				zi[j] = g
				bg[j] += g
			}
		}
		o.chunkLoss[c] = loss
	})
	loss := 0.0
	for _, v := range o.chunkLoss {
		loss += v
	}
	f := loss*invN + 0.5*o.lambda*floats.Dot(w, w)
	if grad == nil {
		return f
	}

	// Bias gradient: chunk sums added in chunk order.
	gb := grad[k*d:]
	clear(gb)
	for c := 0; c < o.chunks; c++ {
		floats.Add(gb, o.chunkBias[c*k:(c+1)*k])
	}
	// Pass 2, over column blocks of W: ∇W[:, j0:j1] = Gᵀ·X[:, j0:j1] + λW,
	// as one axpy per row and class, so every entry is a sum over the rows
	// in row order: the block width (one block per worker, for long
	// vectors) does not change a bit of the result.
	gw := grad[:k*d]
	width := max(colBlock, (d+o.workers-1)/o.workers)
	width = (width + 7) &^ 7
	blocks := (d + width - 1) / width
	parallelFor(o.workers, blocks, func(bi int) {
		j0 := bi * width
		j1 := min(j0+width, d)
		for i := 0; i < k; i++ {
			clear(gw[i*d+j0 : i*d+j1])
		}
		for l := 0; l < n; l++ {
			xr := x[l*d+j0 : l*d+j1]
			for i, g := range o.resid[l*k : (l+1)*k] {
				if g != 0 {
					floats.AddScaled(gw[i*d+j0:i*d+j1], g, xr)
				}
			}
		}
		if o.lambda != 0 {
			for i := 0; i < k; i++ {
				floats.AddScaled(gw[i*d+j0:i*d+j1], o.lambda, w[i*d+j0:i*d+j1])
			}
		}
	})
	return f
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

// funcConverge is SciPy L-BFGS-B's ftol test:
// (f_k − f_k+1) / max(|f_k|, |f_k+1|, floor) ≤ rel.
type funcConverge struct {
	rel, floor float64
	prev       float64
	first      bool
}

func (c *funcConverge) Init(int) { c.first = true }

func (c *funcConverge) Converged(loc *optimize.Location) optimize.Status {
	f := loc.F
	if c.first {
		c.first = false
		c.prev = f
		return optimize.NotTerminated
	}
	prev := c.prev
	c.prev = f
	if c.rel < 0 {
		return optimize.NotTerminated
	}
	if prev-f <= c.rel*math.Max(math.Max(math.Abs(prev), math.Abs(f)), c.floor) {
		return optimize.FunctionConvergence
	}
	return optimize.NotTerminated
}

// Fit minimises (1/n) Σᵢ CE(softmax(W xᵢ + b), yᵢ) + (λ/2)|W|² over W and b
// with L-BFGS, starting from zero or opts.Init. x must hold finite values and
// y labels in [0, K) with at least two distinct classes.
func Fit(x *Matrix, y []int, lambda float64, opts Options) (*FitResult, error) {
	start := time.Now()
	if err := x.checkShape("fit"); err != nil {
		return nil, err
	}
	if !(lambda >= 0) || math.IsInf(lambda, 0) {
		return nil, fmt.Errorf("probe: fit: L2 strength %v is not a finite non-negative number", lambda)
	}
	k := opts.Classes
	if k == 0 {
		k = numClasses(y)
	}
	if err := checkData("fit: train", x, y, k); err != nil {
		return nil, err
	}
	if c := distinctClasses(y); c < 2 {
		return nil, fmt.Errorf("probe: fit: %d rows, %d distinct label(s): %w", len(y), c, ErrOneClass)
	}
	n, d := x.Rows, x.Cols
	maxIter := opts.maxIter()
	gtol := opts.GradTol
	if gtol <= 0 {
		tol := opts.Tol
		if tol <= 0 {
			tol = DefaultTol
		}
		gtol = tol / float64(n)
	}
	frel := opts.FuncRelTol
	if frel == 0 {
		frel = DefaultFuncRelTol
	}
	mem := opts.Memory
	if mem <= 0 {
		mem = DefaultMemory
	}

	obj := newObjective(x, y, k, lambda, opts.workers())
	init := make([]float64, obj.dim())
	if m := opts.Init; m != nil {
		if m.Classes != k || m.Dim != d || len(m.W) != k*d || len(m.B) != k {
			return nil, fmt.Errorf("probe: fit: warm start has %d classes × %d features, data has %d × %d", m.Classes, m.Dim, k, d)
		}
		copy(init, m.W)
		copy(init[k*d:], m.B)
	}
	settings := &optimize.Settings{
		GradientThreshold: gtol,
		// Gonum counts the starting point as a major iteration.
		MajorIterations: maxIter + 1,
		Converger:       &funcConverge{rel: frel, floor: 1 / float64(n)},
	}
	method := &optimize.LBFGS{
		Store:             mem,
		GradStopThreshold: gtol,
		Linesearcher:      &optimize.MoreThuente{DecreaseFactor: armijo, CurvatureFactor: wolfe},
	}
	res, err := optimize.Minimize(obj.problem(), init, settings, method)
	if res == nil {
		return nil, fmt.Errorf("probe: fit (n=%d, d=%d, K=%d, λ=%g): %w", n, d, k, lambda, err)
	}
	out := &FitResult{
		Lambda:      lambda,
		C:           CFromLambda(lambda, n),
		Iterations:  max(res.MajorIterations-1, 0),
		Evaluations: obj.evals,
		Status:      res.Status.String(),
	}
	switch {
	case err != nil:
		// A line search that cannot improve f any more: keep the last
		// accepted point, as SciPy does, but do not call it converged.
		if math.IsNaN(res.F) || math.IsInf(res.F, 0) {
			return nil, fmt.Errorf("probe: fit (n=%d, d=%d, K=%d, λ=%g): objective %v: %w", n, d, k, lambda, res.F, err)
		}
		out.Status = err.Error()
		opts.logger().Warn("probe: L-BFGS stopped early", "err", err, "iterations", out.Iterations, "objective", res.F, "lambda", lambda)
	case res.Status == optimize.GradientThreshold || res.Status == optimize.FunctionConvergence:
		out.Converged = true
	}
	// Objective and gradient at the returned point, in one more evaluation so
	// they refer to exactly these weights.
	g := make([]float64, obj.dim())
	out.Objective = obj.eval(res.X, g)
	out.Evaluations = obj.evals - 1
	out.GradNorm = floats.Norm(g, math.Inf(1))
	out.Model = &Model{Classes: k, Dim: d, W: slices.Clone(res.X[:k*d]), B: slices.Clone(res.X[k*d:])}
	out.Seconds = time.Since(start).Seconds()
	opts.logger().Debug("probe: fit", "n", n, "d", d, "classes", k, "lambda", lambda, "C", out.C,
		"iterations", out.Iterations, "evaluations", out.Evaluations, "converged", out.Converged,
		"status", out.Status, "objective", out.Objective, "grad_max", out.GradNorm, "seconds", out.Seconds)
	return out, nil
}

// FitC is Fit with scikit-learn's C: λ = 1/(C·n).
func FitC(x *Matrix, y []int, c float64, opts Options) (*FitResult, error) {
	if !(c > 0) || math.IsInf(c, 0) {
		return nil, fmt.Errorf("probe: fit: C %v is not a finite positive number", c)
	}
	if x == nil {
		return nil, errors.New("probe: fit: matrix is nil")
	}
	return Fit(x, y, LambdaFromC(c, x.Rows), opts)
}

// Objective returns f(W, b) = mean CE + (λ/2)|W|² of the model on (x, y).
func Objective(m *Model, x *Matrix, y []int, lambda float64) (float64, error) {
	if err := m.check(x, "objective"); err != nil {
		return 0, err
	}
	if err := checkData("objective", x, y, m.Classes); err != nil {
		return 0, err
	}
	obj := newObjective(x, y, m.Classes, lambda, runtime.GOMAXPROCS(0))
	return obj.eval(append(slices.Clone(m.W), m.B...), nil), nil
}

func (m *Model) check(x *Matrix, what string) error {
	if m == nil {
		return fmt.Errorf("probe: %s: model is nil", what)
	}
	if err := x.checkShape(what); err != nil {
		return err
	}
	if x.Cols != m.Dim {
		return fmt.Errorf("probe: %s: matrix has %d features, model has %d", what, x.Cols, m.Dim)
	}
	return nil
}

// Scores returns the logits X·Wᵀ + b (x.Rows×Classes, row-major).
func (m *Model) Scores(x *Matrix) ([]float64, error) {
	if err := m.check(x, "scores"); err != nil {
		return nil, err
	}
	k, d := m.Classes, m.Dim
	z := make([]float64, x.Rows*k)
	chunks := (x.Rows + rowChunk - 1) / rowChunk
	parallelFor(runtime.GOMAXPROCS(0), chunks, func(c int) {
		r0 := c * rowChunk
		r1 := min(r0+rowChunk, x.Rows)
		zc := z[r0*k : r1*k]
		impl.Dgemm(blas.NoTrans, blas.Trans, r1-r0, k, d, 1, x.Data[r0*d:], d, m.W, d, 0, zc, k)
		for i := 0; i < r1-r0; i++ {
			floats.Add(zc[i*k:(i+1)*k], m.B)
		}
	})
	return z, nil
}

// Predict returns the most likely class of every row (the lowest class index
// on ties).
func (m *Model) Predict(x *Matrix) ([]int, error) {
	z, err := m.Scores(x)
	if err != nil {
		return nil, err
	}
	out := make([]int, x.Rows)
	for i := range out {
		out[i] = floats.MaxIdx(z[i*m.Classes : (i+1)*m.Classes])
	}
	return out, nil
}

// Accuracy returns the fraction of rows of x that the model classifies as y.
func (m *Model) Accuracy(x *Matrix, y []int) (float64, error) {
	p, err := m.Predict(x)
	if err != nil {
		return 0, err
	}
	return Accuracy(p, y)
}

// CrossEntropy returns the mean cross-entropy (nats) of the model on (x, y),
// with probabilities floored at 1e-300 as scikit-learn's script reports it.
func (m *Model) CrossEntropy(x *Matrix, y []int) (float64, error) {
	z, err := m.Scores(x)
	if err != nil {
		return 0, err
	}
	if len(y) != x.Rows {
		return 0, fmt.Errorf("probe: cross-entropy: %d labels for %d rows", len(y), x.Rows)
	}
	k := m.Classes
	sum := 0.0
	for i, l := range y {
		if l < 0 || l >= k {
			return 0, fmt.Errorf("probe: cross-entropy: row %d has label %d, want 0..%d", i, l, k-1)
		}
		zi := z[i*k : (i+1)*k]
		lse := floats.LogSumExp(zi)
		sum += -math.Log(math.Max(math.Exp(zi[l]-lse), minProb))
	}
	return sum / float64(len(y)), nil
}

// Accuracy returns the fraction of positions where pred equals want.
func Accuracy(pred, want []int) (float64, error) {
	if len(pred) != len(want) {
		return 0, fmt.Errorf("probe: accuracy: %d predictions for %d labels", len(pred), len(want))
	}
	if len(want) == 0 {
		return 0, errors.New("probe: accuracy: no labels")
	}
	hit := 0
	for i := range pred {
		if pred[i] == want[i] {
			hit++
		}
	}
	return float64(hit) / float64(len(want)), nil
}
