package probe

import (
	"math"
	"slices"
	"testing"

	"gonum.org/v1/gonum/optimize"
)

// refObjective is the float64 objective of the previous implementation,
// written as plain loops: the reference the float32 path is checked against.
type refObjective struct {
	x      *Matrix
	y      []int
	k      int
	lambda float64
}

func (r *refObjective) dim() int { return r.k*r.x.Cols + r.k }

func (r *refObjective) eval(p, grad []float64) float64 {
	n, d, k := r.x.Rows, r.x.Cols, r.k
	w, b := p[:k*d], p[k*d:]
	if grad != nil {
		clear(grad)
	}
	z := make([]float64, k)
	loss := 0.0
	for i := 0; i < n; i++ {
		xi := r.x.Row(i)
		for c := 0; c < k; c++ {
			z[c] = b[c]
			for j, v := range xi {
				z[c] += w[c*d+j] * float64(v)
			}
		}
		m := slices.Max(z)
		s := 0.0
		for _, v := range z {
			s += math.Exp(v - m)
		}
		lse := m + math.Log(s)
		loss += lse - z[r.y[i]]
		if grad == nil {
			continue
		}
		for c := 0; c < k; c++ {
			g := math.Exp(z[c] - lse)
			if c == r.y[i] {
				g--
			}
			g /= float64(n)
			for j, v := range xi {
				grad[c*d+j] += g * float64(v)
			}
			grad[k*d+c] += g
		}
	}
	ww := 0.0
	for i, v := range w {
		ww += v * v
		if grad != nil {
			grad[i] += r.lambda * v
		}
	}
	return loss/float64(n) + 0.5*r.lambda*ww
}

func TestGradientMatchesFiniteDifferences(t *testing.T) {
	cases := []struct {
		name    string
		n, d, k int
		lambda  float64
	}{
		{name: "small", n: 7, d: 3, k: 2, lambda: 0.1},
		{name: "wider than a kernel tile", n: 150, d: 70, k: 4, lambda: 0.01},
		{name: "no penalty", n: 65, d: 5, k: 3, lambda: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x, y := blobs(1, tc.n, tc.d, tc.k, 1, 1)
			obj := newObjective(x, y, tc.k, tc.lambda)
			ref := &refObjective{x: x, y: y, k: tc.k, lambda: tc.lambda}
			p := randomParams(3, obj.dim(), 0.3)
			g := make([]float64, obj.dim())
			f0 := obj.eval(p, g)
			if f1 := obj.eval(p, nil); f1 != f0 {
				t.Fatalf("f with and without gradient differ: %v vs %v", f0, f1)
			}
			if fr := ref.eval(p, nil); math.Abs(f0-fr) > 1e-6*math.Abs(fr) {
				t.Fatalf("float32 objective %.10g, float64 reference %.10g", f0, fr)
			}
			// Central differences of the float64 reference (h small) and of
			// the float32 objective itself (h large enough that its float32
			// rounding, ~1e-7 in f, stays below the tolerance).
			worst := 0.0
			for i := range p {
				for _, fd := range []struct {
					eval func(p, g []float64) float64
					h    float64
					tol  float64
				}{{ref.eval, 1e-6, 1e-4}, {obj.eval, 1e-2, 2e-3}} {
					q := slices.Clone(p)
					q[i] += fd.h
					fp := fd.eval(q, nil)
					q[i] -= 2 * fd.h
					fm := fd.eval(q, nil)
					num := (fp - fm) / (2 * fd.h)
					err := math.Abs(num-g[i]) / math.Max(1e-3, math.Abs(num)+math.Abs(g[i]))
					worst = math.Max(worst, err)
					if err > fd.tol {
						t.Errorf("param %d (h=%g): analytic %.10g, finite difference %.10g (rel err %.2g)", i, fd.h, g[i], num, err)
					}
				}
			}
			t.Logf("worst relative error %.2g over %d parameters", worst, len(p))
		})
	}
}

// TestFitMatchesFloat64Path fits one problem with the float32 objective and
// with the float64 reference under the same L-BFGS settings: objective,
// weights and predictions agree.
func TestFitMatchesFloat64Path(t *testing.T) {
	cases := []struct {
		name   string
		lambda float64
	}{{"strong L2", 1e-1}, {"weak L2", 1e-3}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x, y := blobs(9, 400, 40, 5, 0.4, 1)
			res, err := Fit(x, y, tc.lambda, FitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ref := &refObjective{x: x, y: y, k: 5, lambda: tc.lambda}
			settings, method, _ := FitOptions{}.lbfgs(x.Rows)
			prob := optimize.Problem{Func: func(p []float64) float64 { return ref.eval(p, nil) },
				Grad: func(g, p []float64) { ref.eval(p, g) }}
			old, err := optimize.Minimize(prob, make([]float64, ref.dim()), settings, method)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(res.Objective-old.F) > 1e-6*old.F {
				t.Errorf("objective: float32 path %.10g, float64 path %.10g", res.Objective, old.F)
			}
			worst, scale := 0.0, 0.0
			for i, v := range append(slices.Clone(res.Model.W), res.Model.B...) {
				worst = math.Max(worst, math.Abs(v-old.X[i]))
				scale = math.Max(scale, math.Abs(old.X[i]))
			}
			if worst > 1e-2*scale {
				t.Errorf("weights differ by up to %.3g (largest weight %.3g)", worst, scale)
			}
			oldModel := &Model{Classes: 5, Dim: 40, W: old.X[:200], B: old.X[200:]}
			a, _ := res.Model.Accuracy(x, y)
			b, _ := oldModel.Accuracy(x, y)
			if math.Abs(a-b) > 0.005 {
				t.Errorf("train accuracy: float32 path %v, float64 path %v", a, b)
			}
			t.Logf("f32 %d iterations f=%.10g; f64 %d iterations f=%.10g; max |Δw| %.2g of %.2g",
				res.Iterations, res.Objective, old.MajorIterations-1, old.F, worst, scale)
		})
	}
}
