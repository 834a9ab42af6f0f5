package probe

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
)

func TestStandardizer(t *testing.T) {
	train, _ := NewMatrix(4, 3, []float32{
		1, 5, 10,
		2, 5, 20,
		3, 5, 30,
		4, 5, 40,
	})
	s, err := FitStandardizer(train)
	if err != nil {
		t.Fatal(err)
	}
	wantMean := []float64{2.5, 5, 25}
	wantScale := []float64{math.Sqrt(1.25), 1, math.Sqrt(125)} // population std; constant column → 1
	for j := range wantMean {
		if math.Abs(s.Mean[j]-wantMean[j]) > 1e-12 || math.Abs(s.Scale[j]-wantScale[j]) > 1e-12 {
			t.Errorf("feature %d: mean %v scale %v, want %v %v", j, s.Mean[j], s.Scale[j], wantMean[j], wantScale[j])
		}
	}
	z, err := s.Transform(train)
	if err != nil {
		t.Fatal(err)
	}
	if train.Data[0] != 1 {
		t.Fatal("Transform modified its input")
	}
	for j := 0; j < 3; j++ {
		mean, sq := 0.0, 0.0
		for i := 0; i < 4; i++ {
			v := float64(z.Row(i)[j])
			mean += v / 4
			sq += v * v / 4
		}
		wantSq := 1.0
		if j == 1 {
			wantSq = 0 // constant feature: centred only
		}
		if math.Abs(mean) > 1e-7 || math.Abs(sq-wantSq) > 1e-6 {
			t.Errorf("standardised feature %d: mean %v, mean square %v", j, mean, sq)
		}
	}
	// Another split uses the train statistics.
	other, _ := NewMatrix(1, 3, []float32{2.5, 7, float32(25 + math.Sqrt(125))})
	if err := s.Apply(other); err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, 2, 1}; math.Abs(float64(other.Data[0]-want[0])) > 1e-6 || math.Abs(float64(other.Data[1]-want[1])) > 1e-6 || math.Abs(float64(other.Data[2]-want[2])) > 1e-6 {
		t.Errorf("other split standardised to %v, want %v", other.Data, want)
	}
	wrong, _ := NewMatrix(1, 2, nil)
	if err := s.Apply(wrong); err == nil || !strings.Contains(err.Error(), "2 features, standardizer was fitted on 3") {
		t.Errorf("width mismatch: %v", err)
	}
	bad := train.Clone()
	bad.Row(2)[0] = float32(math.NaN())
	if _, err := FitStandardizer(bad); err == nil || !strings.Contains(err.Error(), "row 2, feature 0 is NaN") {
		t.Errorf("NaN: %v", err)
	}
}

func TestHoldOut(t *testing.T) {
	x, _ := NewMatrix(50, 1, nil)
	y := make([]int, 50)
	for i := range y {
		x.Data[i] = float32(i)
		y[i] = i % 5
	}
	tx, ty, vx, vy, err := HoldOut(x, y, 0.1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Rows != 45 || vx.Rows != 5 || len(ty) != 45 || len(vy) != 5 {
		t.Fatalf("sizes %d/%d, want 45/5", tx.Rows, vx.Rows)
	}
	seen := map[float32]bool{}
	for i, v := range append(slices.Clone(tx.Data), vx.Data...) {
		if seen[v] {
			t.Fatalf("row %v in both parts", v)
		}
		seen[v] = true
		lab := append(slices.Clone(ty), vy...)[i]
		if lab != int(v)%5 {
			t.Fatalf("label %d travelled with row %v", lab, v)
		}
	}
	_, _, vx2, _, _ := HoldOut(x, y, 0.1, 7)
	_, _, vx3, _, _ := HoldOut(x, y, 0.1, 8)
	if !slices.Equal(vx.Data, vx2.Data) || slices.Equal(vx.Data, vx3.Data) {
		t.Errorf("hold-out not a function of the seed: %v %v %v", vx.Data, vx2.Data, vx3.Data)
	}
	if _, _, _, _, err := HoldOut(x, y, 1.5, 0); err == nil {
		t.Error("fraction 1.5 accepted")
	}
}

// line1D is a one-feature, two-class problem: class 1 at x ≈ +1, class 0 at
// x ≈ −1, with ones of class 1 among n rows.
func line1D(n, ones int, seed uint64) (*Matrix, []int) {
	r := rand.New(rand.NewPCG(seed, 3))
	x, _ := NewMatrix(n, 1, nil)
	y := make([]int, n)
	for i := 0; i < n; i++ {
		if i < ones {
			y[i] = 1
			x.Data[i] = float32(1 + 0.1*r.NormFloat64())
		} else {
			x.Data[i] = float32(-1 + 0.1*r.NormFloat64())
		}
	}
	return x, y
}

func TestSelectL2(t *testing.T) {
	// Train: 60% class 0, separable along the feature.
	trX, trY := line1D(100, 40, 1)
	cases := []struct {
		name     string
		valOnes  int // val rows of class 1 (of 20)
		grid     []float64
		wantBest float64
		wantAcc  []float64 // per grid value, in grid order
	}{
		// λ = 100 leaves w ≈ 0, so the bias (class 0 is the majority)
		// decides every row: all-class-1 validation scores 0 there.
		{name: "weak wins", valOnes: 20, grid: []float64{100, 1e-3}, wantBest: 1e-3, wantAcc: []float64{0, 1}},
		// Both fits separate the validation rows: the tie goes to the
		// stronger regularisation, whatever the grid order.
		{name: "tie to stronger", valOnes: 10, grid: []float64{1e-3, 1e-2}, wantBest: 1e-2, wantAcc: []float64{1, 1}},
		{name: "tie to stronger, reversed grid", valOnes: 10, grid: []float64{1e-2, 1e-3}, wantBest: 1e-2, wantAcc: []float64{1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vaX, vaY := line1D(20, tc.valOnes, 2)
			sel, err := SelectL2(trX, trY, vaX, vaY, tc.grid, FitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.BestPoint().L2; got != tc.wantBest {
				t.Errorf("chose λ=%v, want %v (points %+v)", got, tc.wantBest, sel.Points)
			}
			for i, p := range sel.Points {
				if p.L2 != tc.grid[i] || p.ValAcc != tc.wantAcc[i] {
					t.Errorf("point %d: λ=%v val acc %v, want λ=%v acc %v", i, p.L2, p.ValAcc, tc.grid[i], tc.wantAcc[i])
				}
				if math.Abs(p.C-CFromLambda(p.L2, 100)) > 1e-12*p.C {
					t.Errorf("point %d: C %v for λ %v", i, p.C, p.L2)
				}
			}
			if sel.Fit.Lambda != tc.wantBest {
				t.Errorf("returned fit has λ=%v", sel.Fit.Lambda)
			}
		})
	}
	vaX, vaY := line1D(20, 10, 2)
	if _, err := SelectL2(trX, trY, vaX, vaY, nil, FitOptions{}); err == nil {
		t.Error("empty grid accepted")
	}
	wide, _ := NewMatrix(20, 2, nil)
	if _, err := SelectL2(trX, trY, wide, vaY, []float64{1}, FitOptions{}); err == nil || !strings.Contains(err.Error(), "validation has 2 features, train 1") {
		t.Errorf("width mismatch: %v", err)
	}
}

func TestDefaultGrid(t *testing.T) {
	if g := DefaultGrid(-1, -3); !slices.Equal(g, []float64{0.1, 0.01, 0.001}) {
		t.Errorf("DefaultGrid(-1, -3) = %v", g)
	}
	if g := GridFromC([]float64{0.01}, 4000); math.Abs(g[0]-1.0/40) > 1e-18 {
		t.Errorf("GridFromC = %v", g)
	}
}

func feat(key string, label, layer int, vec ...float32) records.Features {
	return records.Features{Key: key, Label: label, Layer: layer, Vec: vec}
}

func TestFeatureSetMatrix(t *testing.T) {
	s := NewFeatureSet("train")
	// Out of order, layers interleaved.
	for _, f := range []records.Features{
		feat("c", 2, 1, 3, 30), feat("a", 0, 0, 1), feat("b", 1, 1, 2, 20),
		feat("c", 2, 0, 3), feat("a", 0, 1, 1, 10), feat("b", 1, 0, 2),
	} {
		if err := s.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Layers(); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("layers %v", got)
	}
	m, y, keys, err := s.Matrix(1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rows != 3 || m.Cols != 2 || !slices.Equal(m.Data, []float32{1, 10, 2, 20, 3, 30}) ||
		!slices.Equal(y, []int{0, 1, 2}) || !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Fatalf("layer 1: %+v %v %v", m, y, keys)
	}
	if _, _, _, err := s.Matrix(5); err == nil {
		t.Error("missing layer accepted")
	}
}

func TestFeatureSetErrors(t *testing.T) {
	cases := []struct {
		name  string
		first records.Features
		bad   records.Features
		want  string
	}{
		{"dims", feat("a", 0, 3, 1, 2), feat("b", 0, 3, 1), `key "b" layer 3 has 1 features, earlier records of the layer have 2`},
		{"NaN", feat("a", 0, 0, 1), feat("img7", 0, 1, 0, float32(math.NaN())), `key "img7" layer 1: feature 1 is NaN`},
		{"duplicate", feat("a", 0, 0, 1), feat("a", 0, 0, 2), `key "a" appears twice at layer 0`},
		{"label conflict", feat("a", 0, 0, 1), feat("a", 1, 1, 2), `key "a" has label 1 at layer 1 and 0`},
		{"unlabelled", feat("a", 0, 0, 1), feat("u", -1, 0, 2), `key "u" layer 0 has label -1`},
		{"empty key", feat("a", 0, 0, 1), feat("", 0, 0, 2), "empty key"},
		{"empty vector", feat("a", 0, 0, 1), feat("e", 0, 0), `key "e" layer 0 has an empty vector`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewFeatureSet("test")
			if err := s.Add(tc.first); err != nil {
				t.Fatal(err)
			}
			err := s.Add(tc.bad)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "test features") {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// featureSets builds train and test sets over layers 0..2 of n and m images;
// every feature value encodes (image, layer) so rows can be traced.
func featureSets(t *testing.T, n, m int) (*FeatureSet, *FeatureSet) {
	t.Helper()
	mk := func(name string, count, base int) *FeatureSet {
		s := NewFeatureSet(name)
		for layer := 2; layer >= 0; layer-- {
			for i := count - 1; i >= 0; i-- {
				id := base + i
				key := name + "-" + string(rune('A'+id/26)) + string(rune('a'+id%26))
				if err := s.Add(feat(key, id%3, layer, float32(id), float32(layer))); err != nil {
					t.Fatal(err)
				}
			}
		}
		return s
	}
	return mk("train", n, 0), mk("test", m, 500)
}

func TestAssembleSplits(t *testing.T) {
	train, test := featureSets(t, 40, 10)
	splits, err := AssembleSplits(train, nil, test, 0.25, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(splits) != 3 {
		t.Fatalf("%d layers", len(splits))
	}
	ref := splits[0]
	if ref.TrainX.Rows != 30 || ref.ValX.Rows != 10 || ref.TestX.Rows != 10 {
		t.Fatalf("rows train/val/test %d/%d/%d, want 30/10/10", ref.TrainX.Rows, ref.ValX.Rows, ref.TestX.Rows)
	}
	for l, sp := range splits {
		for _, part := range []struct {
			x   *Matrix
			y   []int
			ref *Matrix
		}{{sp.TrainX, sp.TrainY, ref.TrainX}, {sp.ValX, sp.ValY, ref.ValX}, {sp.TestX, sp.TestY, ref.TestX}} {
			for i := 0; i < part.x.Rows; i++ {
				id, layer := part.x.Row(i)[0], part.x.Row(i)[1]
				if layer != float32(l) || id != part.ref.Row(i)[0] || part.y[i] != int(id)%3 {
					t.Fatalf("layer %d row %d: image %v layer %v label %d; layer 0 has image %v", l, i, id, layer, part.y[i], part.ref.Row(i)[0])
				}
			}
		}
	}
	// With an explicit validation set.
	_, val := featureSets(t, 1, 5)
	val.name = "val"
	if _, err := AssembleSplits(train, val, test, 0, 0); err != nil {
		t.Fatal(err)
	}
	// A key missing at one layer.
	broken, _ := featureSets(t, 5, 1)
	if err := broken.Add(feat("extra", 0, 1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := AssembleSplits(broken, nil, test, 0.2, 0); err == nil || !strings.Contains(err.Error(), `layer 0 has 5 of 6 keys; missing e.g. ["extra"]`) {
		t.Errorf("missing key: %v", err)
	}
	// Layers that differ between splits.
	short := NewFeatureSet("test")
	if err := short.Add(feat("z", 0, 0, 1, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := AssembleSplits(train, nil, short, 0.2, 0); err == nil || !strings.Contains(err.Error(), "test has layers [0], train has [0 1 2]") {
		t.Errorf("layer mismatch: %v", err)
	}
}

func TestFeatureSetReadFrom(t *testing.T) {
	var buf bytes.Buffer
	w, err := records.NewWriter(&buf, records.KindFeatures)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := w.Write(feat(string(rune('a'+i)), i%2, i%2, float32(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := records.NewReader(&buf, "mem")
	if err != nil {
		t.Fatal(err)
	}
	s := NewFeatureSet("train")
	n, err := s.ReadFrom(r)
	if err != nil || n != 6 || s.Len(0) != 3 || s.Len(1) != 3 {
		t.Fatalf("read %d records, err %v, layer sizes %d %d", n, err, s.Len(0), s.Len(1))
	}
}

// TestSelectL2Patience: with Patience p the grid stops after p fits in a row
// below the best validation accuracy so far; the fits it made are the full
// grid's, bit for bit (same warm-start path), the rest are marked Skipped,
// and the choice is the best of the fitted prefix.
func TestSelectL2Patience(t *testing.T) {
	// Few noisy rows, many features: weak λ overfits, so validation accuracy
	// peaks and then falls along the grid.
	x, y := blobs(7, 240, 120, 2, 0.08, 1)
	trX, trY := x.SelectRows(seq(0, 40)), y[:40]
	vaX, vaY := x.SelectRows(seq(40, 240)), y[40:]
	grid := DefaultGrid(1, -6)
	full, err := SelectL2(trX, trY, vaX, vaY, grid, FitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full grid val accs: %v", valAccsOf(full))
	skippedSome := false
	for _, patience := range []int{1, 2, 3} {
		// Where the rule stops on the full grid's accuracies (grid descends).
		stop, best, worse := len(grid), -1, 0
		for i, p := range full.Points {
			if worse >= patience {
				stop = i
				break
			}
			switch {
			case best < 0 || p.ValAcc > full.Points[best].ValAcc:
				best, worse = i, 0
			case p.ValAcc == full.Points[best].ValAcc:
				worse = 0
			default:
				worse++
			}
		}
		skippedSome = skippedSome || stop < len(grid)
		sel, err := SelectL2(trX, trY, vaX, vaY, grid, FitOptions{Patience: patience})
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range sel.Points {
			want := full.Points[i]
			if i >= stop {
				if !p.Skipped || p.L2 != grid[i] || p.Iterations != 0 {
					t.Errorf("patience %d, λ=%g: %+v, want skipped", patience, grid[i], p)
				}
				continue
			}
			p.FitSeconds, want.FitSeconds = 0, 0
			if p != want {
				t.Errorf("patience %d, λ=%g: %+v, full grid %+v", patience, grid[i], p, want)
			}
		}
		if sel.Best != best || sel.Fit.Lambda != grid[best] {
			t.Errorf("patience %d: chose λ=%g, want %g (val accs %v)", patience, grid[sel.Best], grid[best], valAccsOf(full))
		}
	}
	if !skippedSome {
		t.Fatalf("validation accuracy never fell for 1 step, nothing to stop: %v", valAccsOf(full))
	}
}

func valAccsOf(s *Selection) []float64 {
	var out []float64
	for _, p := range s.Points {
		out = append(out, p.ValAcc)
	}
	return out
}
