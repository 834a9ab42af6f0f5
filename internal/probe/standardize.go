package probe

import (
	"fmt"
	"math"
)

// Standardizer maps each feature to zero mean and unit variance on the split
// it was fitted on, like scikit-learn's StandardScaler: Scale is the
// population standard deviation (ddof 0), and a feature whose deviation is
// zero (or negligible next to its mean) gets Scale 1, so it is only centred.
type Standardizer struct {
	Mean  []float64 `json:"mean"`
	Scale []float64 `json:"scale"`
}

// FitStandardizer computes per-feature mean and standard deviation of x in
// float64 (two passes, so large means do not cost precision).
func FitStandardizer(x *Matrix) (*Standardizer, error) {
	if err := x.checkShape("standardizer"); err != nil {
		return nil, err
	}
	if x.Rows == 0 {
		return nil, fmt.Errorf("probe: standardizer: no rows to fit on")
	}
	if err := x.checkFinite("standardizer"); err != nil {
		return nil, err
	}
	d := x.Cols
	mean := make([]float64, d)
	for i := 0; i < x.Rows; i++ {
		for j, v := range x.Row(i) {
			mean[j] += float64(v)
		}
	}
	n := float64(x.Rows)
	for j := range mean {
		mean[j] /= n
	}
	vr := make([]float64, d)
	for i := 0; i < x.Rows; i++ {
		for j, v := range x.Row(i) {
			t := float64(v) - mean[j]
			vr[j] += t * t
		}
	}
	scale := make([]float64, d)
	for j := range vr {
		s := math.Sqrt(vr[j] / n)
		// StandardScaler's _handle_zeros_in_scale: a scale that is zero up to
		// rounding is replaced by 1.
		if s < 10*epsilon*math.Max(1, math.Abs(mean[j])) {
			s = 1
		}
		scale[j] = s
	}
	return &Standardizer{Mean: mean, Scale: scale}, nil
}

const epsilon = 2.220446049250313e-16

// Apply standardises x in place: x[i][j] = (x[i][j] − Mean[j]) / Scale[j],
// computed in float64 and rounded once to float32.
func (s *Standardizer) Apply(x *Matrix) error {
	if err := x.checkShape("standardize"); err != nil {
		return err
	}
	if x.Cols != len(s.Mean) {
		return fmt.Errorf("probe: standardize: matrix has %d features, standardizer was fitted on %d", x.Cols, len(s.Mean))
	}
	for i := 0; i < x.Rows; i++ {
		r := x.Row(i)
		for j := range r {
			r[j] = float32((float64(r[j]) - s.Mean[j]) / s.Scale[j])
		}
	}
	return nil
}

// Transform returns a standardised copy of x.
func (s *Standardizer) Transform(x *Matrix) (*Matrix, error) {
	if err := x.checkShape("standardize"); err != nil {
		return nil, err
	}
	c := x.Clone()
	if err := s.Apply(c); err != nil {
		return nil, err
	}
	return c, nil
}
