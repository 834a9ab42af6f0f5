package probe

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// DefaultDraws is the number of seeded label draws per low-data size.
const DefaultDraws = 5

// LowDataOptions controls LowData.
type LowDataOptions struct {
	// PerClass lists the labelled train examples per class, e.g. 4, 25, 100.
	PerClass []int
	// Draws is the number of seeded draws per size; 0 means DefaultDraws.
	Draws int
	// Seed seeds the draws: draw i of size k is a function of (Seed, k, i)
	// and of the train labels only.
	Seed uint64
	// Probe is the probe's setting (fit options, standardisation, logger).
	Probe Options
}

// LowDataRow is the low-data probe of one feature set at one size: test
// accuracy over Draws fits, each on PerClass labelled train examples per
// class.
type LowDataRow struct {
	Name     string `json:"name"` // the feature set, e.g. "layer 3"
	Layer    int    `json:"layer"`
	PerClass int    `json:"per_class"`
	Draws    int    `json:"draws"`
	// Mean and Std (population, ddof 0) of TestAccs.
	Mean     float64   `json:"test_acc_mean"`
	Std      float64   `json:"test_acc_std"`
	TestAccs []float64 `json:"test_accs"`
	// L2 is the λ chosen on validation accuracy for each draw.
	L2 []float64 `json:"l2"`
}

// LowData probes one feature set with few labels, the paper's low-data
// evaluation: for each k in o.PerClass and each of o.Draws seeded draws, it
// keeps k train rows of every class (drawn without replacement), fits the
// λ grid on them, chooses λ by accuracy on the full validation split (as
// Layers does; the validation labels are not limited) and records the test
// accuracy of the chosen fit. With o.Probe.Standardize the standardiser is
// fitted on the whole train split, which uses no labels. Every class must
// hold at least k train rows.
func LowData(layer int, name string, s Split, grid []float64, o LowDataOptions) ([]LowDataRow, error) {
	what := "probe " + name + ": low-data"
	if err := s.check(what); err != nil {
		return nil, err
	}
	s, fo, err := prepare(what, s, o.Probe)
	if err != nil {
		return nil, err
	}
	draws := o.Draws
	if draws <= 0 {
		draws = DefaultDraws
	}
	byClass := make([][]int, fo.Classes)
	for i, l := range s.TrainY {
		byClass[l] = append(byClass[l], i)
	}
	var out []LowDataRow
	for _, k := range o.PerClass {
		row := LowDataRow{Name: name, Layer: layer, PerClass: k, Draws: draws}
		for d := 0; d < draws; d++ {
			idx, err := drawPerClass(byClass, k, o.Seed, d)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			sel, err := SelectL2(s.TrainX.SelectRows(idx), pick(s.TrainY, idx), s.ValX, s.ValY, grid, fo)
			if err != nil {
				return nil, fmt.Errorf("%s: %d per class, draw %d: %w", what, k, d, err)
			}
			acc, err := sel.Fit.Model.Accuracy(s.TestX, s.TestY)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			row.TestAccs = append(row.TestAccs, acc)
			row.L2 = append(row.L2, sel.BestPoint().L2)
		}
		row.Mean, row.Std = meanStd(row.TestAccs)
		o.Probe.logger().Info("probe: low-data done", "name", name, "per_class", k, "draws", draws,
			"test_acc_mean", row.Mean, "test_acc_std", row.Std)
		out = append(out, row)
	}
	return out, nil
}

// drawPerClass returns k row indices of every class (byClass[c] lists the
// rows of class c), in increasing order: draw d of a seeded permutation per
// class. Classes without rows are skipped; a class with fewer than k rows is
// an error.
func drawPerClass(byClass [][]int, k int, seed uint64, d int) ([]int, error) {
	if k < 1 {
		return nil, fmt.Errorf("%d examples per class, want at least 1", k)
	}
	r := rand.New(rand.NewPCG(seed, uint64(k)<<32|uint64(d)))
	var idx []int
	for c, rows := range byClass {
		if len(rows) == 0 {
			continue
		}
		if len(rows) < k {
			return nil, fmt.Errorf("class %d has %d train rows, fewer than %d per class", c, len(rows), k)
		}
		for _, j := range r.Perm(len(rows))[:k] {
			idx = append(idx, rows[j])
		}
	}
	slices.Sort(idx)
	return idx, nil
}

func meanStd(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)))
}
