package probe

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gorgonia.org/tensor"
)

// Matrix is a dense row-major float32 matrix: row i is
// Data[i*Cols : (i+1)*Cols]. One row is one example's feature vector. The
// features are kept in float32, the precision they are extracted in, and the
// fit's matrix products run on them in float32 (internal/kernels' SGEMM);
// sums that decide the fit (loss, standardisation statistics) are float64.
type Matrix struct {
	Rows, Cols int
	Data       []float32
}

// NewMatrix wraps data (len rows*cols, row-major) without copying; a nil data
// allocates a zero matrix.
func NewMatrix(rows, cols int, data []float32) (*Matrix, error) {
	if rows < 0 || cols < 0 {
		return nil, fmt.Errorf("probe: matrix shape %d×%d is negative", rows, cols)
	}
	if data == nil {
		data = make([]float32, rows*cols)
	}
	if len(data) != rows*cols {
		return nil, fmt.Errorf("probe: matrix %d×%d needs %d values, got %d", rows, cols, rows*cols, len(data))
	}
	return &Matrix{Rows: rows, Cols: cols, Data: data}, nil
}

// Tensor returns the matrix as a [Rows, Cols] gorgonia tensor sharing its
// storage (no copy).
func (m *Matrix) Tensor() *tensor.Dense {
	return tensor.New(tensor.WithShape(m.Rows, m.Cols), tensor.WithBacking(m.Data))
}

// MatrixFromTensor wraps a contiguous 2-D float32 gorgonia tensor without
// copying: the matrix shares the tensor's storage.
func MatrixFromTensor(t *tensor.Dense) (*Matrix, error) {
	if t == nil {
		return nil, errors.New("probe: matrix from tensor: tensor is nil")
	}
	if t.Dtype() != tensor.Float32 {
		return nil, fmt.Errorf("probe: matrix from tensor: dtype %v, want float32", t.Dtype())
	}
	s := t.Shape()
	if len(s) != 2 {
		return nil, fmt.Errorf("probe: matrix from tensor: shape %v is not [rows, cols]", s)
	}
	if t.IsView() && !t.DataOrder().IsContiguous() {
		return nil, fmt.Errorf("probe: matrix from tensor: view of shape %v is not contiguous; Materialize it first", s)
	}
	return NewMatrix(s[0], s[1], t.Float32s())
}

// Row returns row i (shared storage).
func (m *Matrix) Row(i int) []float32 { return m.Data[i*m.Cols : (i+1)*m.Cols] }

// Clone returns a deep copy.
func (m *Matrix) Clone() *Matrix {
	return &Matrix{Rows: m.Rows, Cols: m.Cols, Data: slices.Clone(m.Data)}
}

// SelectRows returns a new matrix holding the given rows, in that order.
func (m *Matrix) SelectRows(idx []int) *Matrix {
	out := &Matrix{Rows: len(idx), Cols: m.Cols, Data: make([]float32, len(idx)*m.Cols)}
	for r, i := range idx {
		copy(out.Row(r), m.Row(i))
	}
	return out
}

// checkShape checks that m is a well-formed matrix.
func (m *Matrix) checkShape(what string) error {
	if m == nil {
		return fmt.Errorf("probe: %s: matrix is nil", what)
	}
	if m.Rows < 0 || m.Cols < 0 || len(m.Data) != m.Rows*m.Cols {
		return fmt.Errorf("probe: %s: matrix %d×%d holds %d values", what, m.Rows, m.Cols, len(m.Data))
	}
	return nil
}

// checkFinite returns an error naming the first row (and column) holding a
// NaN or an infinity.
func (m *Matrix) checkFinite(what string) error {
	for i := 0; i < m.Rows; i++ {
		for j, v := range m.Row(i) {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("probe: %s: row %d, feature %d is %v", what, i, j, v)
			}
		}
	}
	return nil
}

// checkData validates a design matrix and its labels for classes classes
// (labels must lie in [0, classes)).
func checkData(what string, x *Matrix, y []int, classes int) error {
	if err := x.checkShape(what); err != nil {
		return err
	}
	if x.Rows == 0 {
		return fmt.Errorf("probe: %s: no rows", what)
	}
	if x.Cols == 0 {
		return fmt.Errorf("probe: %s: no features", what)
	}
	if len(y) != x.Rows {
		return fmt.Errorf("probe: %s: %d labels for %d rows", what, len(y), x.Rows)
	}
	for i, l := range y {
		if l < 0 || l >= classes {
			return fmt.Errorf("probe: %s: row %d has label %d, want 0..%d", what, i, l, classes-1)
		}
	}
	return x.checkFinite(what)
}

// numClasses returns max(label)+1 over the given label slices.
func numClasses(ys ...[]int) int {
	k := 0
	for _, y := range ys {
		for _, l := range y {
			if l+1 > k {
				k = l + 1
			}
		}
	}
	return k
}

// ErrOneClass is returned (wrapped) when the training labels hold fewer than
// two distinct classes.
var ErrOneClass = errors.New("training labels hold fewer than two classes")

func distinctClasses(y []int) int {
	seen := map[int]struct{}{}
	for _, l := range y {
		seen[l] = struct{}{}
	}
	return len(seen)
}

// HoldOut splits (x, y) into a training part and a validation part of
// round(frac·rows) rows, chosen by a permutation seeded with seed. The paper
// holds out 10% of CIFAR's and STL-10's train split. Row order within each
// part follows the permutation.
func HoldOut(x *Matrix, y []int, frac float64, seed uint64) (trainX *Matrix, trainY []int, valX *Matrix, valY []int, err error) {
	if err := x.checkShape("hold-out"); err != nil {
		return nil, nil, nil, nil, err
	}
	if len(y) != x.Rows {
		return nil, nil, nil, nil, fmt.Errorf("probe: hold-out: %d labels for %d rows", len(y), x.Rows)
	}
	if !(frac > 0 && frac < 1) {
		return nil, nil, nil, nil, fmt.Errorf("probe: hold-out fraction %v is not in (0, 1)", frac)
	}
	nVal := int(math.Round(frac * float64(x.Rows)))
	if nVal < 1 || nVal >= x.Rows {
		return nil, nil, nil, nil, fmt.Errorf("probe: hold-out of %v of %d rows leaves an empty part", frac, x.Rows)
	}
	perm := holdOutPerm(x.Rows, seed)
	va, tr := perm[:nVal], perm[nVal:]
	return x.SelectRows(tr), pick(y, tr), x.SelectRows(va), pick(y, va), nil
}

// holdOutPerm is the seeded permutation behind HoldOut and AssembleSplits.
func holdOutPerm(n int, seed uint64) []int {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)).Perm(n)
}
