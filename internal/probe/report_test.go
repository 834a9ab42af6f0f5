package probe

import (
	"bytes"
	"encoding/json"
	"image/png"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// layeredSplits makes synthetic "layers" whose class separation rises to a
// peak at layer 3 of 0..6 and falls again, like the paper's probe curve.
func layeredSplits(seps []float64) map[int]Split {
	out := map[int]Split{}
	for l, sep := range seps {
		x, y := blobs(uint64(100+l), 600, 12, 4, sep, 1)
		// blobs cycles labels, so contiguous ranges are balanced.
		out[l] = Split{
			TrainX: x.SelectRows(seq(0, 360)), TrainY: y[:360],
			ValX: x.SelectRows(seq(360, 480)), ValY: y[360:480],
			TestX: x.SelectRows(seq(480, 600)), TestY: y[480:],
		}
	}
	return out
}

func seq(a, b int) []int {
	s := make([]int, b-a)
	for i := range s {
		s[i] = a + i
	}
	return s
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestLayersEndToEnd(t *testing.T) {
	seps := []float64{0.15, 0.3, 0.5, 0.9, 0.55, 0.35, 0.25}
	layers := layeredSplits(seps)
	grid := DefaultGrid(0, -3)
	opts := Options{Standardize: true, Logger: quietLogger()}
	rep, err := Layers(layers, grid, opts)
	if err != nil {
		t.Fatal(err)
	}
	rep.Title = "synthetic probe"
	if len(rep.Rows) != len(seps) {
		t.Fatalf("%d rows", len(rep.Rows))
	}
	for i, row := range rep.Rows {
		if row.Layer != i || row.Name != LayerName(i) || row.Dim != 12 || len(row.Grid) != len(grid) {
			t.Errorf("row %d: %+v", i, row)
		}
		if row.TestAcc < 0.25-0.1 || row.TestAcc > 1 || !row.Converged || row.Iterations == 0 {
			t.Errorf("row %d: test acc %v converged %v iterations %d", i, row.TestAcc, row.Converged, row.Iterations)
		}
		if math.Abs(row.C-CFromLambda(row.L2, 360)) > 1e-9*row.C {
			t.Errorf("row %d: C %v for λ %v", i, row.C, row.L2)
		}
	}
	best, _ := rep.Best()
	if best.Layer != 3 {
		t.Errorf("best layer %d, want 3 (val accs: %v)", best.Layer, valAccs(rep))
	}
	raw := layeredSplits([]float64{0.1})[0]
	rawRow, err := Baseline(RawPixels, raw, grid, opts)
	if err != nil {
		t.Fatal(err)
	}
	rep.AddBaseline(rawRow)
	rnd, err := Layers(layeredSplits([]float64{0.05, 0.2, 0.1}), grid, opts)
	if err != nil {
		t.Fatal(err)
	}
	rndRow, ok := BaselineFromBest(RandomInitPrefix, rnd)
	if !ok || rndRow.Name != "random init / layer 1" || !rndRow.Baseline {
		t.Fatalf("random-init baseline %+v (val accs %v)", rndRow, valAccs(rnd))
	}
	rep.AddBaseline(rndRow)

	s, ok := rep.Summary()
	if !ok || s.MarginOverRawPixels == nil || *s.MarginOverRawPixels <= 10 {
		t.Errorf("summary %+v: want the best layer well above raw pixels", s)
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Log("\n" + md.String())
	}
	if dir := os.Getenv("PROBE_PLOT_DIR"); dir != "" {
		if err := rep.SavePNG(filepath.Join(dir, "probe_synthetic.png")); err != nil {
			t.Fatal(err)
		}
	}
	// Standardisation worked on copies: the caller's matrices are untouched.
	if fresh := layeredSplits(seps)[0]; !slices.Equal(fresh.TrainX.Data, layers[0].TrainX.Data) {
		t.Error("Layers modified the caller's train matrix")
	}
}

func valAccs(r *Report) []float64 {
	var v []float64
	for _, row := range r.Rows {
		v = append(v, row.ValAcc)
	}
	return v
}

// fixedReport is a hand-made report whose summary is known exactly.
func fixedReport() *Report {
	rows := []Row{
		{Layer: 0, Name: "embedding", Dim: 64, ValAcc: 0.30, TestAcc: 0.29, TrainAcc: 0.35, L2: 1e-2, C: 0.025, Iterations: 40, Converged: true, FitSeconds: 0.5},
		{Layer: 1, Name: "layer 1", Dim: 64, ValAcc: 0.50, TestAcc: 0.48, TrainAcc: 0.60, L2: 1e-3, C: 0.25, Iterations: 90, Converged: true, FitSeconds: 1.25},
		{Layer: 2, Name: "layer 2", Dim: 64, ValAcc: 0.55, TestAcc: 0.52, TrainAcc: 0.70, L2: 1e-3, C: 0.25, Iterations: 120, Converged: true, FitSeconds: 1.5},
		{Layer: 3, Name: "layer 3", Dim: 64, ValAcc: 0.45, TestAcc: 0.44, TrainAcc: 0.66, L2: 1e-4, C: 2.5, Iterations: 1000, Converged: false, FitSeconds: 4},
	}
	r := &Report{Title: "toy", Rows: rows, Grid: []float64{1e-2, 1e-3, 1e-4}}
	r.AddBaseline(Row{Layer: -1, Name: RawPixels, Dim: 3072, ValAcc: 0.41, TestAcc: 0.40, TrainAcc: 0.5, L2: 1e-2, C: 0.025, Iterations: 170, Converged: true, FitSeconds: 9})
	r.AddBaseline(Row{Layer: 1, Name: "random init / layer 1", Dim: 64, ValAcc: 0.33, TestAcc: 0.31, L2: 1e-2, Converged: true})
	return r
}

func TestReportMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := fixedReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"# toy\n",
		"λ ∈ {0.01, 0.001, 0.0001}",
		"| layer | features | dim | val acc | test acc | train acc | chosen L2 | C | iterations | fit s |",
		"| 0 | embedding | 64 | 30.00% | 29.00% | 35.00% | 0.01 | 0.025 | 40 | 0.50 |",
		"| 2 | **layer 2** | 64 | 55.00% | 52.00% | 70.00% | 0.001 | 0.25 | 120 | 1.50 |",
		"| – | baseline: raw pixels | 3072 | 41.00% | 40.00% |",
		"| – | baseline: random init / layer 1 | 64 |",
		"Best layer: layer 2 (layer 2 of 3), val acc 55.00%, test acc 52.00%; 12.0 points above the raw-pixel baseline (test acc 40.00%); the last layer is 8.0 points below it.",
		"Not converged at the iteration limit: layer 3.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// Without a raw-pixel baseline the line says so.
	r := fixedReport()
	r.Baselines = nil
	b.Reset()
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "; no raw-pixel baseline") {
		t.Errorf("markdown without baseline:\n%s", b.String())
	}
	// The fit settings, and where a grid stopped early, are stated.
	r = fixedReport()
	r.MaxIter, r.Patience = 3000, 2
	r.Baselines[0].Grid = []GridPoint{{L2: 1e-2, ValAcc: 0.41}, {L2: 1e-3, ValAcc: 0.40}, {L2: 1e-4, Skipped: true}}
	b.Reset()
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"λ ∈ {0.01, 0.001, 0.0001}; at most 3000 iterations per fit; each grid, fitted from the strongest λ down, stops after 2 λ in a row",
		"raw pixels: grid stopped early, λ ∈ {0.0001} not fitted.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}

func TestReportJSON(t *testing.T) {
	var b bytes.Buffer
	if err := fixedReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Title string `json:"title"`
		Rows  []struct {
			Layer   int     `json:"layer"`
			Name    string  `json:"name"`
			TestAcc float64 `json:"test_acc"`
			L2      float64 `json:"l2"`
			C       float64 `json:"c"`
		} `json:"rows"`
		Baselines []struct {
			Name     string `json:"name"`
			Baseline bool   `json:"baseline"`
		} `json:"baselines"`
		Grid    []float64 `json:"grid"`
		Summary struct {
			Best struct {
				Layer int `json:"layer"`
			} `json:"best"`
			Margin *float64 `json:"margin_over_raw_pixels_points"`
			Drop   float64  `json:"last_layer_drop_points"`
		} `json:"summary"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if got.Title != "toy" || len(got.Rows) != 4 || got.Rows[2].Name != "layer 2" || got.Rows[2].TestAcc != 0.52 ||
		got.Rows[2].L2 != 1e-3 || got.Rows[2].C != 0.25 || len(got.Grid) != 3 {
		t.Errorf("rows/grid decoded as %+v", got)
	}
	if len(got.Baselines) != 2 || got.Baselines[0].Name != RawPixels || !got.Baselines[0].Baseline {
		t.Errorf("baselines decoded as %+v", got.Baselines)
	}
	if got.Summary.Best.Layer != 2 || got.Summary.Margin == nil || math.Abs(*got.Summary.Margin-12) > 1e-9 || math.Abs(got.Summary.Drop-8) > 1e-9 {
		t.Errorf("summary decoded as %+v", got.Summary)
	}
}

func TestReportPlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "probe.png")
	if dir := os.Getenv("PROBE_PLOT_DIR"); dir != "" {
		path = filepath.Join(dir, "probe_toy.png")
	}
	if err := fixedReport().SavePNG(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s (%d bytes) is not a PNG: %v", path, st.Size(), err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 300 || st.Size() < 10000 {
		t.Errorf("PNG %dx%d, %d bytes: too small to hold the plot", b.Dx(), b.Dy(), st.Size())
	}
	// An empty report cannot be plotted.
	if err := (&Report{}).PlotPNG(io.Discard); err == nil {
		t.Error("empty report plotted")
	}
}

func TestLayersErrors(t *testing.T) {
	good := layeredSplits([]float64{0.5})[0]
	cases := []struct {
		name string
		mod  func(s *Split)
		want string
	}{
		{"val width", func(s *Split) { s.ValX = &Matrix{Rows: 1, Cols: 3, Data: make([]float32, 3)}; s.ValY = []int{0} }, "probe layer 2 val: 3 features, train has 12"},
		{"test labels", func(s *Split) { s.TestY = s.TestY[:5] }, "probe layer 2 test: 5 labels for 120 rows"},
		{"NaN in test", func(s *Split) { s.TestX = s.TestX.Clone(); s.TestX.Row(17)[4] = float32(math.NaN()) }, "row 17, feature 4 is NaN"},
		{"one class", func(s *Split) { s.TrainY = make([]int, len(s.TrainY)) }, "fewer than two classes"},
		{"nil test", func(s *Split) { s.TestX = nil }, "probe layer 2 test: matrix is nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.mod(&s)
			_, err := Layers(map[int]Split{2: s}, []float64{0.1}, Options{Logger: quietLogger()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := Layers(nil, []float64{1}, Options{}); err == nil {
		t.Error("no layers accepted")
	}
}
