package kernels

import (
	"math"
	"math/rand"
	"testing"

	"gorgonia.org/tensor"
)

// TestMatMulTensor multiplies gorgonia tensors with our SGEMM and with
// gorgonia's own MatMul (gonum underneath): the results must agree.
func TestMatMulTensor(t *testing.T) {
	m, k, n := 17, 33, 7
	a := tensor.New(tensor.WithShape(m, k), tensor.WithBacking(randSlice(rand.New(rand.NewSource(1)), m*k, 1)))
	b := tensor.New(tensor.WithShape(k, n), tensor.WithBacking(randSlice(rand.New(rand.NewSource(2)), k*n, 1)))
	got, err := MatMulTensor(a, b)
	if err != nil {
		t.Fatal(err)
	}
	want, err := tensor.MatMul(a, b)
	if err != nil {
		t.Fatal(err)
	}
	g, w := got.Float32s(), want.(*tensor.Dense).Float32s()
	for i := range w {
		if math.Abs(float64(g[i]-w[i])) > 1e-4*(1+math.Abs(float64(w[i]))) {
			t.Fatalf("element %d: %v, gorgonia %v", i, g[i], w[i])
		}
	}
	if _, err := MatMulTensor(a, a); err == nil {
		t.Fatal("mismatched shapes accepted")
	}
	if _, err := Float32s(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2}))); err == nil {
		t.Fatal("float64 tensor accepted")
	}
}
