package kernels

import (
	"testing"

	"gorgonia.org/tensor"
)

// TestDenseZeroCopy: a Dense over a slice shares its memory both ways, and
// Float32s hands the same memory back.
func TestDenseZeroCopy(t *testing.T) {
	data := []float32{1, 2, 3, 4, 5, 6}
	d := Dense(data, 2, 3)
	if !d.Shape().Eq(tensor.Shape{2, 3}) {
		t.Fatalf("shape %v", d.Shape())
	}
	data[4] = 40
	if v, _ := d.At(1, 1); v.(float32) != 40 {
		t.Fatalf("the tensor does not see the slice: %v", v)
	}
	back, err := Float32s(d)
	if err != nil {
		t.Fatal(err)
	}
	if &back[0] != &data[0] {
		t.Fatal("Float32s copied")
	}
	if _, err := Float32s(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2}))); err == nil {
		t.Error("a float64 tensor was accepted")
	}
	defer func() {
		if recover() == nil {
			t.Error("a wrong shape did not panic")
		}
	}()
	Dense(data, 4, 2)
}
