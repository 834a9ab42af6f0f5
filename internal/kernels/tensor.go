package kernels

import (
	"fmt"

	"gorgonia.org/tensor"
)

// Float32s returns the backing slice of a float32 gorgonia tensor without
// copying: model.WTensorOf uses it to write a tensor handed across a
// package boundary (model parameters, VQ-VAE weights) and the kernels can
// work on it in place. Views that are not contiguous are refused.
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

// Dense wraps data (not copied) as a float32 tensor of the given shape,
// whose product must be len(data).
func Dense(data []float32, shape ...int) *tensor.Dense {
	n := 1
	for _, s := range shape {
		n *= s
	}
	if n != len(data) {
		panic(fmt.Sprintf("kernels: %d values for a tensor of shape %v", len(data), shape))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
}
