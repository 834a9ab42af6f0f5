package probe

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ConcatName names the concatenation of layers, e.g. "concat L1+L2+L3".
func ConcatName(layers []int) string {
	parts := make([]string, len(layers))
	for i, l := range layers {
		parts[i] = "L" + strconv.Itoa(l)
	}
	return "concat " + strings.Join(parts, "+")
}

// Concat joins the features of several layers column-wise, in the order
// given (the paper's concatenation of 5 layers). The layers' splits must
// hold the same rows in the same order with the same labels, as
// AssembleSplits builds them.
func Concat(layers map[int]Split, which []int) (Split, error) {
	what := "probe " + ConcatName(which)
	if len(which) < 2 {
		return Split{}, fmt.Errorf("%s: want at least two layers", what)
	}
	parts := make([]Split, len(which))
	for i, l := range which {
		s, ok := layers[l]
		if !ok {
			return Split{}, fmt.Errorf("%s: no layer %d", what, l)
		}
		if slices.Contains(which[:i], l) {
			return Split{}, fmt.Errorf("%s: layer %d listed twice", what, l)
		}
		if err := s.check(what); err != nil {
			return Split{}, err
		}
		parts[i] = s
	}
	var out Split
	var err error
	pick := []func(*Split) (**Matrix, *[]int){
		func(s *Split) (**Matrix, *[]int) { return &s.TrainX, &s.TrainY },
		func(s *Split) (**Matrix, *[]int) { return &s.ValX, &s.ValY },
		func(s *Split) (**Matrix, *[]int) { return &s.TestX, &s.TestY },
	}
	for _, p := range pick {
		xs := make([]*Matrix, len(parts))
		var y []int
		for i := range parts {
			x, ly := p(&parts[i])
			xs[i] = *x
			if i == 0 {
				y = *ly
			} else if !slices.Equal(*ly, y) {
				return Split{}, fmt.Errorf("%s: layer %d's labels differ from layer %d's (rows not the same images)", what, which[i], which[0])
			}
		}
		ox, oy := p(&out)
		if *ox, err = hconcat(xs); err != nil {
			return Split{}, fmt.Errorf("%s: %w", what, err)
		}
		*oy = slices.Clone(y)
	}
	return out, nil
}

// hconcat joins matrices of equal row counts side by side.
func hconcat(xs []*Matrix) (*Matrix, error) {
	rows, cols := xs[0].Rows, 0
	for _, x := range xs {
		if x.Rows != rows {
			return nil, fmt.Errorf("%d rows beside %d", x.Rows, rows)
		}
		cols += x.Cols
	}
	out := &Matrix{Rows: rows, Cols: cols, Data: make([]float32, rows*cols)}
	for i := 0; i < rows; i++ {
		dst := out.Row(i)
		for _, x := range xs {
			dst = dst[copy(dst, x.Row(i)):]
		}
	}
	return out, nil
}

// ConcatRow probes the concatenation of layers like a layer and returns its
// row (Layer −1, Name ConcatName(which)); add it to a report with AddConcat.
func ConcatRow(layers map[int]Split, which []int, grid []float64, opts Options) (Row, error) {
	s, err := Concat(layers, which)
	if err != nil {
		return Row{}, err
	}
	return probeOne(-1, ConcatName(which), s, grid, opts)
}
