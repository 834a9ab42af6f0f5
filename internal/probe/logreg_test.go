package probe

import (
	"errors"
	"github.com/igpt/igpt/internal/kernels"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// blobs draws n rows of d features in k Gaussian clusters whose centres are
// sep apart along random directions; noise is the within-cluster std.
func blobs(seed uint64, n, d, k int, sep, noise float64) (*Matrix, []int) {
	r := rand.New(rand.NewPCG(seed, 1))
	centres := make([][]float64, k)
	for c := range centres {
		centres[c] = make([]float64, d)
		for j := range centres[c] {
			centres[c][j] = sep * r.NormFloat64()
		}
	}
	x, _ := NewMatrix(n, d, nil)
	y := make([]int, n)
	for i := 0; i < n; i++ {
		c := i % k
		y[i] = c
		for j, v := range x.Row(i) {
			x.Row(i)[j] = v + float32(centres[c][j]+noise*r.NormFloat64())
		}
	}
	return x, y
}

func randomParams(seed uint64, n int, scale float64) []float64 {
	r := rand.New(rand.NewPCG(seed, 2))
	p := make([]float64, n)
	for i := range p {
		p[i] = scale * r.NormFloat64()
	}
	return p
}

func TestObjectiveValueByHand(t *testing.T) {
	// One row, two classes, two features: f = log(1+e^{-margin}) + λ/2|W|².
	x, _ := NewMatrix(1, 2, []float32{1, 2})
	y := []int{1}
	w := []float64{0.5, -0.25, 0.1, 0.3} // class 0: (0.5,-0.25), class 1: (0.1, 0.3)
	b := []float64{0.2, -0.1}
	z0 := 0.5*1 - 0.25*2 + 0.2
	z1 := 0.1*1 + 0.3*2 - 0.1
	lambda := 0.7
	want := math.Log(math.Exp(z0)+math.Exp(z1)) - z1 + 0.5*lambda*(0.25+0.0625+0.01+0.09)
	got, err := Objective(&Model{Classes: 2, Dim: 2, W: w, B: b}, x, y, lambda)
	if err != nil {
		t.Fatal(err)
	}
	// W is rounded to float32 for the product: agreement to float32's precision.
	if math.Abs(got-want) > 1e-7 {
		t.Fatalf("objective %.17g, want %.17g", got, want)
	}
}

func TestSeparableReachesFullAccuracy(t *testing.T) {
	x, y := blobs(2, 300, 10, 3, 5, 0.2)
	res, err := Fit(x, y, 1e-4, FitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := res.Model.Accuracy(x, y)
	if err != nil {
		t.Fatal(err)
	}
	if acc != 1 {
		t.Fatalf("train accuracy %v on separable blobs, want 1", acc)
	}
	if !res.Converged {
		t.Errorf("not converged: %s after %d iterations", res.Status, res.Iterations)
	}
}

// gradientDescent minimises the float64 reference objective with plain
// fixed-step descent, as an independent check of the L-BFGS optimum.
func gradientDescent(ref *refObjective, steps int, lr float64) ([]float64, float64) {
	p := make([]float64, ref.dim())
	g := make([]float64, ref.dim())
	for s := 0; s < steps; s++ {
		ref.eval(p, g)
		for i := range p {
			p[i] -= lr * g[i]
		}
	}
	return p, ref.eval(p, nil)
}

func TestOptimumMatchesLongGradientDescent(t *testing.T) {
	cases := []struct {
		name   string
		lambda float64
	}{
		{"strong L2", 0.5},
		{"moderate L2", 0.05},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Overlapping classes: the optimum is unique and interior.
			x, y := blobs(4, 60, 4, 3, 1, 1)
			res, err := Fit(x, y, tc.lambda, FitOptions{GradTol: 1e-9, FuncRelTol: -1})
			if err != nil {
				t.Fatal(err)
			}
			ref := &refObjective{x: x, y: y, k: 3, lambda: tc.lambda}
			// Smoothness: the CE Hessian is bounded by ½·max|x|² (+1 for the bias)
			// plus λ; a step of 1/L is safe.
			maxSq := 0.0
			for i := 0; i < x.Rows; i++ {
				s := 1.0
				for _, v := range x.Row(i) {
					s += float64(v) * float64(v)
				}
				maxSq = math.Max(maxSq, s)
			}
			lr := 1 / (0.5*maxSq + tc.lambda)
			p, fgd := gradientDescent(ref, 20000, lr)
			// The float32 products agree with float64 to ~1e-7 in f.
			fl := ref.eval(append(slices.Clone(res.Model.W), res.Model.B...), nil)
			if math.Abs(fl-fgd) > 1e-7 {
				t.Errorf("objective: L-BFGS %.12g, gradient descent %.12g", fl, fgd)
			}
			lb := append(slices.Clone(res.Model.W), res.Model.B...)
			worst := 0.0
			for i := range p {
				worst = math.Max(worst, math.Abs(p[i]-lb[i]))
			}
			if worst > 1e-3 {
				t.Errorf("weights differ from gradient descent by up to %.3g", worst)
			}
			if res.GradNorm > 1e-5 {
				t.Errorf("gradient max %.3g at the optimum", res.GradNorm)
			}
			t.Logf("λ=%g: L-BFGS f=%.12g in %d iterations; GD f=%.12g; max |Δw| %.2g", tc.lambda, res.Objective, res.Iterations, fgd, worst)
		})
	}
}

func TestDeterministicAcrossThreads(t *testing.T) {
	x, y := blobs(5, 500, 130, 4, 0.7, 1)
	var ref *FitResult
	defer kernels.SetThreads(kernels.SetThreads(1))
	for _, threads := range []int{1, 1, 2, 3} {
		kernels.SetThreads(threads)
		res, err := Fit(x, y, 1e-3, FitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = res
			continue
		}
		if res.Iterations != ref.Iterations || res.Objective != ref.Objective ||
			!slices.Equal(res.Model.W, ref.Model.W) || !slices.Equal(res.Model.B, ref.Model.B) {
			t.Fatalf("%d threads: %d iterations, f=%.17g; 1 thread: %d iterations, f=%.17g; weights equal: %v",
				threads, res.Iterations, res.Objective, ref.Iterations, ref.Objective, slices.Equal(res.Model.W, ref.Model.W))
		}
	}
}

func TestWarmStartAndIterationLimit(t *testing.T) {
	x, y := blobs(6, 200, 20, 3, 0.5, 1)
	cold, err := Fit(x, y, 1e-2, FitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	warm, err := Fit(x, y, 1e-2, FitOptions{Init: cold.Model})
	if err != nil {
		t.Fatal(err)
	}
	if warm.Iterations >= cold.Iterations/2 || warm.Iterations > 3 {
		t.Errorf("warm start from the optimum took %d iterations (cold %d)", warm.Iterations, cold.Iterations)
	}
	if warm.Objective > cold.Objective+1e-12 {
		t.Errorf("warm start objective %.15g > cold %.15g", warm.Objective, cold.Objective)
	}
	capped, err := Fit(x, y, 1e-2, FitOptions{MaxIter: 3})
	if err != nil {
		t.Fatal(err)
	}
	if capped.Iterations != 3 || capped.Converged {
		t.Errorf("MaxIter 3: %d iterations, converged %v (%s)", capped.Iterations, capped.Converged, capped.Status)
	}
	if _, err := Fit(x, y, 1e-2, FitOptions{Init: &Model{Classes: 2, Dim: 20, W: make([]float64, 40), B: make([]float64, 2)}}); err == nil {
		t.Error("warm start of the wrong shape accepted")
	}
}

func TestLambdaCRoundTrip(t *testing.T) {
	for _, c := range []float64{1e-4, 0.01, 1} {
		l := LambdaFromC(c, 4000)
		if got := CFromLambda(l, 4000); math.Abs(got-c)/c > 1e-15 {
			t.Errorf("C %v → λ %v → C %v", c, l, got)
		}
	}
	x, y := blobs(7, 100, 5, 2, 1, 1)
	a, err := FitC(x, y, 0.1, FitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Fit(x, y, 1/(0.1*100), FitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Objective != b.Objective || a.C != 0.1 && math.Abs(a.C-0.1) > 1e-15 {
		t.Errorf("FitC(0.1): f=%v C=%v; Fit(λ=0.1): f=%v", a.Objective, a.C, b.Objective)
	}
}

func TestFitErrors(t *testing.T) {
	x, y := blobs(8, 20, 3, 2, 1, 1)
	nan := x.Clone()
	nan.Row(13)[1] = float32(math.NaN())
	inf := x.Clone()
	inf.Row(4)[0] = float32(math.Inf(1))
	cases := []struct {
		name string
		x    *Matrix
		y    []int
		opts FitOptions
		want string
		is   error
	}{
		{name: "labels short", x: x, y: y[:19], want: "19 labels for 20 rows"},
		{name: "bad shape", x: &Matrix{Rows: 3, Cols: 2, Data: make([]float32, 5)}, y: []int{0, 1, 0}, want: "3×2 holds 5 values"},
		{name: "one class", x: x, y: make([]int, 20), want: "fewer than two classes", is: ErrOneClass},
		{name: "NaN", x: nan, y: y, want: "row 13, feature 1 is NaN"},
		{name: "Inf", x: inf, y: y, want: "row 4, feature 0 is +Inf"},
		{name: "negative label", x: x, y: append([]int{-1}, y[1:]...), want: "row 0 has label -1"},
		{name: "label beyond classes", x: x, y: y, opts: FitOptions{Classes: 1}, want: "has label 1, want 0..0"},
		{name: "no rows", x: &Matrix{Cols: 3}, y: nil, want: "no rows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Fit(tc.x, tc.y, 0.1, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
		})
	}
	if _, err := Fit(x, y, -1, FitOptions{}); err == nil {
		t.Error("negative λ accepted")
	}
	if _, err := FitC(x, y, 0, FitOptions{}); err == nil {
		t.Error("C = 0 accepted")
	}
}

func TestPredictAccuracyCrossEntropy(t *testing.T) {
	m := &Model{Classes: 3, Dim: 2, W: []float64{1, 0, 0, 1, -1, -1}, B: []float64{0, 0, 0.5}}
	x, _ := NewMatrix(4, 2, []float32{2, 0, 0, 2, -1, -1, 0, 0})
	pred, err := m.Predict(x)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 2}; !slices.Equal(pred, want) {
		t.Fatalf("predict %v, want %v", pred, want)
	}
	acc, err := m.Accuracy(x, []int{0, 1, 1, 2})
	if err != nil || acc != 0.75 {
		t.Fatalf("accuracy %v, %v; want 0.75", acc, err)
	}
	// Row 3 (x = 0): logits (0, 0, 0.5).
	ce, err := m.CrossEntropy(x.SelectRows([]int{3}), []int{2})
	want := math.Log(2+math.Exp(0.5)) - 0.5
	if err != nil || math.Abs(ce-want) > 1e-7 {
		t.Fatalf("cross-entropy %v, %v; want %v", ce, err, want)
	}
	if _, err := Accuracy([]int{1}, []int{1, 2}); err == nil {
		t.Error("accuracy of mismatched lengths accepted")
	}
	bad, _ := NewMatrix(1, 3, nil)
	if _, err := m.Predict(bad); err == nil || !strings.Contains(err.Error(), "3 features, model has 2") {
		t.Errorf("predict on wrong width: %v", err)
	}
}
