package probe

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/igpt/igpt/internal/kernels"
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
	maxLinesearch     = 20      // SciPy L-BFGS-B maxls: evaluations per line search
	// noiseRelTol: a line search that fails once an iteration lowers f by
	// no more than this relative amount has met the float32 resolution of f
	// (logits are float32 products); the fit counts as converged.
	noiseRelTol = 1e-6
	armijo      = 1e-3   // SciPy's dcsrch ftol (sufficient decrease)
	wolfe       = 0.9    // SciPy's dcsrch gtol (curvature)
	minProb     = 1e-300 // floor for p in reported cross-entropies
)

// FitOptions controls a fit. The zero value gives scikit-learn's settings.
type FitOptions struct {
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
	// Logger receives debug lines; nil means slog.Default().
	Logger *slog.Logger
	// Progress, if set, is told of each λ fitted (1) or skipped (the
	// count) by SelectL2: for a progress bar.
	Progress func(fits int)
}

func (o FitOptions) progress(n int) {
	if o.Progress != nil {
		o.Progress(n)
	}
}

func (o FitOptions) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// maxIter is MaxIter with its default applied.
func (o FitOptions) maxIter() int {
	if o.MaxIter > 0 {
		return o.MaxIter
	}
	return DefaultMaxIter
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

// funcConverge is SciPy L-BFGS-B's ftol test:
// (f_k − f_k+1) / max(|f_k|, |f_k+1|, floor) ≤ rel.
type funcConverge struct {
	rel, floor float64
	prev       float64
	first      bool
	// lastRel is the relative decrease of the last accepted iteration
	// (+Inf before the first).
	lastRel float64
}

func (c *funcConverge) Init(int) { c.first, c.lastRel = true, math.Inf(1) }

func (c *funcConverge) Converged(loc *optimize.Location) optimize.Status {
	f := loc.F
	if c.first {
		c.first = false
		c.prev = f
		return optimize.NotTerminated
	}
	prev := c.prev
	c.prev = f
	scale := math.Max(math.Max(math.Abs(prev), math.Abs(f)), c.floor)
	c.lastRel = (prev - f) / scale
	if c.rel < 0 {
		return optimize.NotTerminated
	}
	if prev-f <= c.rel*scale {
		return optimize.FunctionConvergence
	}
	return optimize.NotTerminated
}

// Fit minimises (1/n) Σᵢ CE(softmax(W xᵢ + b), yᵢ) + (λ/2)|W|² over W and b
// with L-BFGS, starting from zero or opts.Init. x must hold finite values and
// y labels in [0, K) with at least two distinct classes.
func Fit(x *Matrix, y []int, lambda float64, opts FitOptions) (*FitResult, error) {
	start := time.Now()
	k, err := checkFit(x, y, lambda, opts)
	if err != nil {
		return nil, err
	}
	n, d := x.Rows, x.Cols
	obj := newObjective(x, y, k, lambda)
	init := make([]float64, obj.dim())
	if m := opts.Init; m != nil {
		if m.Classes != k || m.Dim != d || len(m.W) != k*d || len(m.B) != k {
			return nil, fmt.Errorf("probe: fit: warm start has %d classes × %d features, data has %d × %d", m.Classes, m.Dim, k, d)
		}
		copy(init, m.W)
		copy(init[k*d:], m.B)
	}
	settings, method, conv := opts.lbfgs(n)
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
		// accepted point, as SciPy does. It has converged when f had
		// already stopped improving beyond float32 rounding.
		if math.IsNaN(res.F) || math.IsInf(res.F, 0) {
			return nil, fmt.Errorf("probe: fit (n=%d, d=%d, K=%d, λ=%g): objective %v: %w", n, d, k, lambda, res.F, err)
		}
		out.Status = err.Error()
		if out.Converged = conv.lastRel <= noiseRelTol; !out.Converged {
			opts.logger().Warn("probe: L-BFGS stopped early", "err", err, "iterations", out.Iterations, "objective", res.F, "lambda", lambda)
		}
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

// checkFit validates Fit's inputs and returns the number of classes.
func checkFit(x *Matrix, y []int, lambda float64, opts FitOptions) (int, error) {
	if err := x.checkShape("fit"); err != nil {
		return 0, err
	}
	if !(lambda >= 0) || math.IsInf(lambda, 0) {
		return 0, fmt.Errorf("probe: fit: L2 strength %v is not a finite non-negative number", lambda)
	}
	k := opts.Classes
	if k == 0 {
		k = numClasses(y)
	}
	if err := checkData("fit: train", x, y, k); err != nil {
		return 0, err
	}
	if c := distinctClasses(y); c < 2 {
		return 0, fmt.Errorf("probe: fit: %d rows, %d distinct label(s): %w", len(y), c, ErrOneClass)
	}
	return k, nil
}

// lbfgs returns gonum's settings and method for a fit on n rows: SciPy
// L-BFGS-B's stopping tests (gtol on max|∇f|, ftol on the relative decrease)
// and line search (at most maxLinesearch evaluations), with the defaults of
// FitOptions applied.
func (o FitOptions) lbfgs(n int) (*optimize.Settings, *optimize.LBFGS, *funcConverge) {
	gtol := o.GradTol
	if gtol <= 0 {
		tol := o.Tol
		if tol <= 0 {
			tol = DefaultTol
		}
		gtol = tol / float64(n)
	}
	frel := o.FuncRelTol
	if frel == 0 {
		frel = DefaultFuncRelTol
	}
	mem := o.Memory
	if mem <= 0 {
		mem = DefaultMemory
	}
	conv := &funcConverge{rel: frel, floor: 1 / float64(n)}
	settings := &optimize.Settings{
		GradientThreshold: gtol,
		// Gonum counts the starting point as a major iteration.
		MajorIterations: o.maxIter() + 1,
		Converger:       conv,
	}
	method := &optimize.LBFGS{
		Store:             mem,
		GradStopThreshold: gtol,
		Linesearcher: &cappedLinesearch{max: maxLinesearch,
			Linesearcher: &optimize.MoreThuente{DecreaseFactor: armijo, CurvatureFactor: wolfe}},
	}
	return settings, method, conv
}

// errLinesearchCap ends a line search that found no acceptable step in
// maxLinesearch evaluations (SciPy's ABNORMAL_TERMINATION_IN_LNSRCH).
var errLinesearchCap = fmt.Errorf("linesearch: no acceptable step in %d evaluations", maxLinesearch)

// cappedLinesearch bounds the evaluations of one line search, as SciPy's
// maxls does; gonum's More–Thuente has no such bound and, once f is flat to
// rounding, can spend hundreds of evaluations before it gives up.
type cappedLinesearch struct {
	optimize.Linesearcher
	max, n int
}

func (c *cappedLinesearch) Init(value, derivative, step float64) optimize.Operation {
	c.n = 1
	return c.Linesearcher.Init(value, derivative, step)
}

func (c *cappedLinesearch) Iterate(value, derivative float64) (optimize.Operation, float64, error) {
	op, step, err := c.Linesearcher.Iterate(value, derivative)
	if err == nil && op != optimize.MajorIteration {
		if c.n++; c.n > c.max {
			return 0, 0, errLinesearchCap
		}
	}
	return op, step, err
}

// FitC is Fit with scikit-learn's C: λ = 1/(C·n).
func FitC(x *Matrix, y []int, c float64, opts FitOptions) (*FitResult, error) {
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
	obj := newObjective(x, y, m.Classes, lambda)
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

// Scores returns the logits X·Wᵀ + b (x.Rows×Classes, row-major), the
// product taken in float32 as in the fit.
func (m *Model) Scores(x *Matrix) ([]float64, error) {
	if err := m.check(x, "scores"); err != nil {
		return nil, err
	}
	k, d, n := m.Classes, m.Dim, x.Rows
	w32 := make([]float32, len(m.W))
	for i, v := range m.W {
		w32[i] = float32(v)
	}
	// Zᵀ = W·Xᵀ: the wide product is the fast layout of the kernels' SGEMM.
	zt := make([]float32, k*n)
	kernels.Sgemm(false, true, k, n, d, 1, w32, d, x.Data, d, 0, zt, n)
	z := make([]float64, n*k)
	for j := 0; j < k; j++ {
		for i, v := range zt[j*n : (j+1)*n] {
			z[i*k+j] = float64(v) + m.B[j]
		}
	}
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
