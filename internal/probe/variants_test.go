package probe

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
	"gorgonia.org/tensor"
)

// errCase checks err against a table case's expected error substring: with
// want "" an error fails the test; otherwise err must contain want, and the
// result true says the case is done.
func errCase(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	return true
}

func TestDrawPerClass(t *testing.T) {
	// 3 classes of 10, 6 and 0 rows (class 2 absent), interleaved.
	var y []int
	for i := 0; i < 16; i++ {
		y = append(y, min(i%2, 1-i/12))
	}
	byClass := make([][]int, 3)
	for i, l := range y {
		byClass[l] = append(byClass[l], i)
	}
	cases := []struct {
		name string
		k    int
		want string // error substring; "" for success
	}{
		{"one", 1, ""},
		{"all of the smaller class", 6, ""},
		{"more than a class holds", 7, "has 6 train rows, fewer than 7"},
		{"zero", 0, "want at least 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			idx, err := drawPerClass(byClass, tc.k, 1, 0)
			if errCase(t, err, tc.want) {
				return
			}
			count := map[int]int{}
			for _, i := range idx {
				count[y[i]]++
			}
			if count[0] != tc.k || count[1] != tc.k || len(idx) != 2*tc.k || !slices.IsSorted(idx) || len(slices.Compact(slices.Clone(idx))) != len(idx) {
				t.Fatalf("draw %v: per class %v", idx, count)
			}
			again, _ := drawPerClass(byClass, tc.k, 1, 0)
			if !slices.Equal(idx, again) {
				t.Fatalf("same seed, different draws: %v %v", idx, again)
			}
		})
	}
	a, _ := drawPerClass(byClass, 3, 1, 0)
	b, _ := drawPerClass(byClass, 3, 1, 1)
	c, _ := drawPerClass(byClass, 3, 2, 0)
	if slices.Equal(a, b) && slices.Equal(a, c) {
		t.Errorf("draws ignore the draw index and the seed: %v", a)
	}
}

func TestLowData(t *testing.T) {
	// Well-separated classes: a few labels per class suffice; noisy ones:
	// more labels help.
	cases := []struct {
		name     string
		sep      float64
		perClass []int
		minMean  []float64
	}{
		{"separable", 3, []int{2, 10}, []float64{0.95, 0.95}},
		{"overlapping", 0.35, []int{2, 60}, []float64{0.25, 0.5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := layeredSplits([]float64{tc.sep})[0]
			o := LowDataOptions{PerClass: tc.perClass, Draws: 3, Seed: 7, Probe: Options{Standardize: true, Logger: quietLogger()}}
			rows, err := LowData(2, "layer 2", s, DefaultGrid(0, -2), o)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(tc.perClass) {
				t.Fatalf("%d rows", len(rows))
			}
			for i, r := range rows {
				if r.Name != "layer 2" || r.Layer != 2 || r.PerClass != tc.perClass[i] || r.Draws != 3 || len(r.TestAccs) != 3 || len(r.L2) != 3 {
					t.Fatalf("row %d: %+v", i, r)
				}
				m, sd := meanStd(r.TestAccs)
				if r.Mean != m || r.Std != sd || r.Mean < tc.minMean[i] || r.Std < 0 {
					t.Errorf("%d/class: mean %.3f ± %.3f over %v, want mean ≥ %v", r.PerClass, r.Mean, r.Std, r.TestAccs, tc.minMean[i])
				}
			}
			again, err := LowData(2, "layer 2", s, DefaultGrid(0, -2), o)
			if err != nil || !slices.EqualFunc(rows, again, func(a, b LowDataRow) bool { return slices.Equal(a.TestAccs, b.TestAccs) && slices.Equal(a.L2, b.L2) }) {
				t.Errorf("not deterministic: %+v vs %+v (%v)", rows, again, err)
			}
		})
	}
	s := layeredSplits([]float64{1})[0]
	if _, err := LowData(0, "x", s, []float64{1}, LowDataOptions{PerClass: []int{1000}}); err == nil || !strings.Contains(err.Error(), "fewer than 1000 per class") {
		t.Errorf("too many per class: %v", err)
	}
}

func TestConcat(t *testing.T) {
	layers := layeredSplits([]float64{0.2, 0.3, 1.5})
	cases := []struct {
		name  string
		which []int
		want  string
	}{
		{"two layers", []int{2, 0}, ""},
		{"three layers", []int{0, 1, 2}, ""},
		{"one layer", []int{1}, "at least two layers"},
		{"missing layer", []int{0, 9}, "no layer 9"},
		{"twice", []int{1, 1}, "layer 1 listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Concat(layers, tc.which)
			if errCase(t, err, tc.want) {
				return
			}
			if s.TrainX.Cols != 12*len(tc.which) || s.TestX.Rows != layers[0].TestX.Rows || !slices.Equal(s.ValY, layers[0].ValY) {
				t.Fatalf("shape %d×%d", s.TrainX.Rows, s.TrainX.Cols)
			}
			// Row 5 of the test split: the layers' rows side by side, in order.
			var want []float32
			for _, l := range tc.which {
				want = append(want, layers[l].TestX.Row(5)...)
			}
			if !slices.Equal(s.TestX.Row(5), want) {
				t.Fatalf("test row 5 %v, want %v", s.TestX.Row(5), want)
			}
		})
	}
	bad := layeredSplits([]float64{0.2, 0.3})
	b := bad[1]
	b.TrainY = slices.Clone(b.TrainY)
	b.TrainY[0] = (b.TrainY[0] + 1) % 4
	bad[1] = b
	if _, err := Concat(bad, []int{0, 1}); err == nil || !strings.Contains(err.Error(), "labels differ") {
		t.Errorf("label mismatch: %v", err)
	}
	row, err := ConcatRow(layers, []int{0, 2}, DefaultGrid(0, -2), Options{Standardize: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if row.Name != "concat L0+L2" || row.Dim != 24 || row.Layer != -1 || row.TestAcc < 0.9 {
		t.Errorf("concat row %+v", row)
	}
}

func TestReportVariantRows(t *testing.T) {
	r := &Report{Rows: []Row{{Layer: 1, Name: "layer 1", TestAcc: 0.5, ValAcc: 0.5, Converged: true}}}
	r.AddConcat(Row{Layer: -1, Name: ConcatName([]int{1, 2, 3}), Dim: 96, TestAcc: 0.55, Converged: true})
	r.AddLowData(LowDataRow{Name: "layer 1", Layer: 1, PerClass: 4, Draws: 5, Mean: 0.412, Std: 0.013, L2: []float64{0.1, 0.01}})
	r.AddBaseline(Row{Layer: -1, Name: RawPixelsInput, TestAcc: 0.3, Converged: true})
	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| – | concat L1+L2+L3 | 96 |",
		"| low-data 4/class | layer 1 | 5 | 41.20% ± 1.30 | 0.1, 0.01 |",
		"20.0 points above the " + RawPixelsInput + " baseline (test acc 30.00%)",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Concat  []Row        `json:"concat"`
		LowData []LowDataRow `json:"low_data"`
		Summary Summary      `json:"summary"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Concat) != 1 || len(back.LowData) != 1 || back.LowData[0].Mean != 0.412 ||
		back.Summary.MarginOverInputPixels == nil || math.Abs(*back.Summary.MarginOverInputPixels-20) > 1e-9 {
		t.Errorf("JSON round trip: %+v", back)
	}
	// Without the variants the JSON has no trace of them.
	plain := &Report{Rows: r.Rows}
	js.Reset()
	if err := plain.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"concat", "low_data", "input_pixels"} {
		if strings.Contains(js.String(), k) {
			t.Errorf("plain report JSON mentions %q", k)
		}
	}
}

func TestPixelFeatures(t *testing.T) {
	img := func(h, w, c int, pix ...byte) records.Image {
		return records.Image{Key: "k", H: h, W: w, C: c, Pix: pix}
	}
	cases := []struct {
		name string
		img  records.Image
		h, w int
		want []float32 // ×255
		err  string
	}{
		{"same size", img(1, 3, 1, 0, 128, 255), 1, 3, []float32{0, 128, 255}, ""},
		{"2×2 boxes", img(2, 4, 1, 10, 20, 30, 40, 50, 60, 70, 80), 1, 2, []float32{35, 55}, ""},
		{"fractional 3→2", img(1, 3, 1, 0, 30, 60), 1, 2, []float32{10, 50}, ""},
		{"channels stay apart", img(1, 2, 2, 0, 100, 50, 200), 1, 1, []float32{25, 150}, ""},
		{"zero size", img(1, 2, 1, 0, 0), 0, 2, nil, `image "k"`},
		{"short pixels", img(2, 2, 3, 0), 1, 1, nil, "bad shape"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PixelFeatures(tc.img, tc.h, tc.w)
			if errCase(t, err, tc.err) {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d features, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i]/255 {
					t.Fatalf("features×255 = %v, want %v", got, tc.want)
				}
			}
		})
	}
	// At the original size: bit-identical to the raw-pixel pipeline's v/255.
	pix := make([]byte, 4*4*3)
	for i := range pix {
		pix[i] = byte(i * 37)
	}
	got, _ := PixelFeatures(img(4, 4, 3, pix...), 4, 4)
	for i, v := range pix {
		if got[i] != float32(v)/255 {
			t.Fatalf("feature %d: %v, want %v", i, got[i], float32(v)/255)
		}
	}
}

func TestMatrixTensorZeroCopy(t *testing.T) {
	m, _ := NewMatrix(2, 3, []float32{1, 2, 3, 4, 5, 6})
	tn := m.Tensor()
	if s := tn.Shape(); len(s) != 2 || s[0] != 2 || s[1] != 3 {
		t.Fatalf("shape %v", s)
	}
	back, err := MatrixFromTensor(tn)
	if err != nil {
		t.Fatal(err)
	}
	back.Data[4] = 50
	if m.Data[4] != 50 || tn.Float32s()[4] != 50 {
		t.Fatal("Tensor/MatrixFromTensor copied the data")
	}
	for _, tc := range []struct {
		name string
		t    *tensor.Dense
		want string
	}{
		{"3-D", tensor.New(tensor.WithShape(1, 2, 3), tensor.WithBacking(make([]float32, 6))), "not [rows, cols]"},
		{"float64", tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(make([]float64, 6))), "want float32"},
		{"nil", nil, "tensor is nil"},
	} {
		if _, err := MatrixFromTensor(tc.t); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}
