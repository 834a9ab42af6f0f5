package probe

import (
	"fmt"
	"math"
	"sort"
)

// GridPoint is the fit at one L2 strength of a SelectL2 grid.
type GridPoint struct {
	L2         float64 `json:"l2"`
	C          float64 `json:"c"` // scikit-learn's C = 1/(L2·n_train)
	ValAcc     float64 `json:"val_acc"`
	TrainAcc   float64 `json:"train_acc"`
	Iterations int     `json:"iterations"`
	Converged  bool    `json:"converged"`
	Objective  float64 `json:"objective"`
	FitSeconds float64 `json:"fit_seconds"`
	// Skipped marks a λ that was not fitted: the grid stopped early (see
	// FitOptions.Patience). Only L2 and C are set.
	Skipped bool `json:"skipped,omitempty"`
}

// Selection is the outcome of SelectL2.
type Selection struct {
	// Points holds one entry per grid value, in the order of the grid given.
	Points []GridPoint
	// Best indexes Points: the highest validation accuracy, ties going to the
	// stronger regularisation (larger L2).
	Best int
	// Fit is the chosen fit (its Model predicts with the chosen L2).
	Fit *FitResult
}

// BestPoint returns Points[Best].
func (s *Selection) BestPoint() GridPoint { return s.Points[s.Best] }

// DefaultGrid returns λ values spaced by factors of 10 from 10^hi down to
// 10^lo (inclusive), e.g. DefaultGrid(-1, -5) = 1e-1, 1e-2, …, 1e-5.
func DefaultGrid(hi, lo int) []float64 {
	var g []float64
	for e := hi; e >= lo; e-- {
		g = append(g, math.Pow(10, float64(e)))
	}
	return g
}

// GridFromC converts scikit-learn C values to λ values for n training rows.
func GridFromC(cs []float64, n int) []float64 {
	out := make([]float64, len(cs))
	for i, c := range cs {
		out[i] = LambdaFromC(c, n)
	}
	return out
}

// SelectL2 fits (trainX, trainY) once per L2 strength λ in grid and picks the
// λ with the best accuracy on (valX, valY); ties go to the larger λ. Fits run
// from the strongest λ to the weakest, each warm-started from the previous
// solution (the first from opts.Init or zero), which changes iteration counts
// but not the optimum being sought. With opts.Patience > 0 the path stops
// once that many consecutive λ values have scored below the best validation
// accuracy so far; the weaker λ values left are marked Skipped.
func SelectL2(trainX *Matrix, trainY []int, valX *Matrix, valY []int, grid []float64, opts FitOptions) (*Selection, error) {
	if len(grid) == 0 {
		return nil, fmt.Errorf("probe: select L2: empty grid")
	}
	for i, l := range grid {
		if !(l >= 0) || math.IsInf(l, 0) {
			return nil, fmt.Errorf("probe: select L2: grid value %d is %v, want finite and non-negative", i, l)
		}
	}
	if opts.Classes == 0 {
		opts.Classes = numClasses(trainY, valY)
	}
	if err := checkData("select L2: validation", valX, valY, opts.Classes); err != nil {
		return nil, err
	}
	if trainX != nil && valX.Cols != trainX.Cols {
		return nil, fmt.Errorf("probe: select L2: validation has %d features, train %d", valX.Cols, trainX.Cols)
	}
	order := make([]int, len(grid))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return grid[order[a]] > grid[order[b]] })

	sel := &Selection{Points: make([]GridPoint, len(grid)), Best: -1}
	fits := make([]*FitResult, len(grid))
	worse := 0 // consecutive fits below the best validation accuracy so far
	for oi, gi := range order {
		if opts.Patience > 0 && worse >= opts.Patience {
			for _, si := range order[oi:] {
				sel.Points[si] = GridPoint{L2: grid[si], C: CFromLambda(grid[si], trainX.Rows), Skipped: true}
			}
			opts.progress(len(order) - oi)
			opts.logger().Debug("probe: grid stopped early", "patience", opts.Patience,
				"best_lambda", grid[sel.Best], "skipped", len(order)-oi)
			break
		}
		res, err := Fit(trainX, trainY, grid[gi], opts)
		if err != nil {
			return nil, fmt.Errorf("probe: select L2: λ=%g: %w", grid[gi], err)
		}
		opts.progress(1)
		opts.Init = res.Model
		val, err := res.Model.Accuracy(valX, valY)
		if err != nil {
			return nil, fmt.Errorf("probe: select L2: λ=%g: %w", grid[gi], err)
		}
		tr, err := res.Model.Accuracy(trainX, trainY)
		if err != nil {
			return nil, fmt.Errorf("probe: select L2: λ=%g: %w", grid[gi], err)
		}
		fits[gi] = res
		sel.Points[gi] = GridPoint{
			L2: grid[gi], C: res.C, ValAcc: val, TrainAcc: tr, Iterations: res.Iterations,
			Converged: res.Converged, Objective: res.Objective, FitSeconds: res.Seconds,
		}
		opts.logger().Debug("probe: grid point", "lambda", grid[gi], "C", res.C, "val_acc", val,
			"train_acc", tr, "iterations", res.Iterations, "converged", res.Converged, "seconds", res.Seconds)
		b := sel.Best
		if b < 0 || val > sel.Points[b].ValAcc || (val == sel.Points[b].ValAcc && grid[gi] > grid[b]) {
			sel.Best = gi
		}
		if val >= sel.Points[sel.Best].ValAcc { // a new best, or a tie with it
			worse = 0
		} else {
			worse++
		}
	}
	sel.Fit = fits[sel.Best]
	return sel, nil
}
