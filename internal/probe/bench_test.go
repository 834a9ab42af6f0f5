package probe

import "testing"

// BenchmarkEval times one objective+gradient evaluation at the raw-pixel
// probe's shape (4000×3072, 10 classes).
func BenchmarkEval(b *testing.B) {
	x, y := blobs(1, 4000, 3072, 10, 0.1, 1)
	obj := newObjective(x, y, 10, 1e-3)
	p := randomParams(2, obj.dim(), 0.01)
	g := make([]float64, obj.dim())
	b.SetBytes(int64(len(x.Data) * 4 * 2))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		obj.eval(p, g)
	}
}

func BenchmarkEvalFuncOnly(b *testing.B) {
	x, y := blobs(1, 4000, 3072, 10, 0.1, 1)
	obj := newObjective(x, y, 10, 1e-3)
	p := randomParams(2, obj.dim(), 0.01)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		obj.eval(p, nil)
	}
}
