package probe

import (
	"math"
	"testing"
)

// flipped returns 1−y for two-class labels.
func flipped(y []int) []int {
	out := make([]int, len(y))
	for i, v := range y {
		out[i] = 1 - v
	}
	return out
}

// disagreeingSplits builds two layers whose validation and test splits come
// from different distributions, so every split mix-up changes the answer:
// layer 1's validation labels agree with train and its test labels are
// flipped (val ≈ 100%, test ≈ 0%); layer 2 is the other way round (val ≈ 0%,
// test ≈ 100%). Choosing on validation must pick layer 1 and report its test
// accuracy near 0; scoring "test" on validation, or choosing on test, gives
// near 100% or layer 2.
func disagreeingSplits() map[int]Split {
	x, y := blobs(7, 300, 6, 2, 4, 0.2) // two well-separated clusters
	train, val, test := seq(0, 100), seq(100, 200), seq(200, 300)
	return map[int]Split{
		1: {TrainX: x.SelectRows(train), TrainY: y[:100],
			ValX: x.SelectRows(val), ValY: y[100:200],
			TestX: x.SelectRows(test), TestY: flipped(y[200:])},
		2: {TrainX: x.SelectRows(train), TrainY: y[:100],
			ValX: x.SelectRows(val), ValY: flipped(y[100:200]),
			TestX: x.SelectRows(test), TestY: y[200:]},
	}
}

func TestProbeSplitsAreNotMixed(t *testing.T) {
	rep, err := Layers(disagreeingSplits(), []float64{1e-2, 1e-4}, Options{Standardize: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	byLayer := map[int]Row{}
	for _, r := range rep.Rows {
		byLayer[r.Layer] = r
	}
	if r := byLayer[1]; r.ValAcc < 0.95 || r.TestAcc > 0.05 {
		t.Errorf("layer 1: val %.3f, test %.3f; want val ≈ 1 and test ≈ 0 (its test labels are flipped): "+
			"is test accuracy scored on another split?", r.ValAcc, r.TestAcc)
	}
	if r := byLayer[2]; r.ValAcc > 0.05 || r.TestAcc < 0.95 {
		t.Errorf("layer 2: val %.3f, test %.3f; want val ≈ 0 and test ≈ 1 (its val labels are flipped)", r.ValAcc, r.TestAcc)
	}
	best, _ := rep.Best()
	if best.Layer != 1 {
		t.Errorf("best layer %d; validation chooses layer 1 (test would choose layer 2)", best.Layer)
	}
	s, _ := rep.Summary()
	if s.Best.Layer != 1 || s.Best.TestAcc > 0.05 {
		t.Errorf("summary best %s at test %.3f; want layer 1 at its (low) test accuracy", s.Best.Name, s.Best.TestAcc)
	}
	if rep.Images == nil || *rep.Images != (SplitSizes{Train: 100, Val: 100, Test: 100}) {
		t.Errorf("report images %+v, want 100/100/100", rep.Images)
	}
}

// TestProbeBestTiesUseValidation: two layers tie on validation accuracy; the
// tie goes to the lower validation loss (then the shallower layer), never to
// the higher test accuracy.
func TestProbeBestTiesUseValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows []Row
		want int
	}{
		{"lower val loss wins over higher test", []Row{
			{Layer: 1, ValAcc: 0.5, ValLoss: 1.0, TestAcc: 0.4},
			{Layer: 2, ValAcc: 0.5, ValLoss: 1.2, TestAcc: 0.9},
		}, 1},
		{"lower val loss deeper", []Row{
			{Layer: 1, ValAcc: 0.5, ValLoss: 1.2, TestAcc: 0.9},
			{Layer: 2, ValAcc: 0.5, ValLoss: 1.0, TestAcc: 0.4},
		}, 2},
		{"full tie goes shallower", []Row{
			{Layer: 1, ValAcc: 0.5, ValLoss: 1.0, TestAcc: 0.4},
			{Layer: 2, ValAcc: 0.5, ValLoss: 1.0, TestAcc: 0.9},
		}, 1},
		{"val accuracy first", []Row{
			{Layer: 1, ValAcc: 0.5, ValLoss: 0.1, TestAcc: 0.9},
			{Layer: 2, ValAcc: 0.6, ValLoss: 2.0, TestAcc: 0.1},
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			best, _ := (&Report{Rows: tc.rows}).Best()
			if best.Layer != tc.want {
				t.Errorf("best layer %d, want %d", best.Layer, tc.want)
			}
		})
	}
}

func TestGridEdgeAndLastLayerPhrase(t *testing.T) {
	sel := &Selection{Points: []GridPoint{{L2: 1}, {L2: 0.1}, {L2: 0.01}}}
	for best, want := range []string{"strongest", "", "weakest"} {
		sel.Best = best
		if got := gridEdge(sel); got != want {
			t.Errorf("best λ %g: edge %q, want %q", sel.Points[best].L2, got, want)
		}
	}
	for _, tc := range []struct {
		drop float64
		want string
	}{
		{2.04, "the last layer is 2.0 points below it"},
		{-1.5, "the last layer is 1.5 points above it (on test)"},
		{0.01, "the last layer is level with it (within 0.05 points)"},
		{-0.04, "the last layer is level with it (within 0.05 points)"},
	} {
		if got := LastLayerPhrase(tc.drop); got != tc.want || math.IsNaN(tc.drop) {
			t.Errorf("drop %v: %q, want %q", tc.drop, got, tc.want)
		}
	}
}

// TestMarginPhrase: a signed margin reads "above" or "below" with its size,
// never "-2.2 points over" or "0.0 points below".
func TestMarginPhrase(t *testing.T) {
	for _, tc := range []struct {
		m    float64
		want string
	}{
		{5.56, "5.6 points above"},
		{-2.2, "2.2 points below"},
		{-0.04, "level with (within 0.05 points)"},
		{0.049, "level with (within 0.05 points)"},
	} {
		if got := MarginPhrase(tc.m); got != tc.want {
			t.Errorf("MarginPhrase(%v) = %q, want %q", tc.m, got, tc.want)
		}
	}
}
