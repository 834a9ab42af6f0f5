package kernels

import (
	"fmt"

	"gorgonia.org/tensor"
)

// Float32s returns the backing slice of a float32 gorgonia tensor, the type
// igpt uses where a tensor crosses a package boundary; the kernels work on
// it in place. Views that are not contiguous are refused.
func Float32s(t tensor.Tensor) ([]float32, error) {
	d, ok := t.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("kernels: %T is not a dense tensor", t)
	}
	if d.Dtype() != tensor.Float32 {
		return nil, fmt.Errorf("kernels: tensor of %v, want float32", d.Dtype())
	}
	if d.IsView() && !d.DataOrder().IsContiguous() {
		return nil, fmt.Errorf("kernels: tensor view of shape %v is not contiguous; Materialize it first", d.Shape())
	}
	return d.Float32s(), nil
}

// MatMulTensor computes c = a·b for 2-D float32 tensors a [m,k] and b [k,n]
// into a new [m,n] tensor.
func MatMulTensor(a, b tensor.Tensor) (*tensor.Dense, error) {
	as, bs := a.Shape(), b.Shape()
	if len(as) != 2 || len(bs) != 2 || as[1] != bs[0] {
		return nil, fmt.Errorf("kernels: matmul of shapes %v and %v", as, bs)
	}
	ad, err := Float32s(a)
	if err != nil {
		return nil, err
	}
	bd, err := Float32s(b)
	if err != nil {
		return nil, err
	}
	m, k, n := as[0], as[1], bs[1]
	c := make([]float32, m*n)
	MatMul(c, ad, bd, m, n, k, false)
	return tensor.New(tensor.WithShape(m, n), tensor.WithBacking(c)), nil
}
