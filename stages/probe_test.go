package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/pipelines"
)

// TestProbeEndToEnd runs the whole workflow on a tiny folder dataset
// (8×8 images quantized at 4×4) and checks the report: a row per layer,
// the baselines (raw pixels at 8×8 and at the 4×4 input, random init),
// the variants, the plot.
func TestProbeEndToEnd(t *testing.T) {
	root := t.TempDir()
	yaml := strings.Replace(trainYAML(root, folderArchive(t, 8, nil), 20, 32, 2, 0.01), "quantize: {", "quantize: {resize: [4, 4], ", 1) +
		"probe: {batch: 5, l2: [0.1, 0.001], max_iter: 7, patience: 1, labels_per_class: [1], low_data_draws: 3, concat: [1, 2], raw_pixels: both}\n"
	p, err := runUntil(t, yaml, "probe", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pm := p.byName["probe"].Manifest
	var rep struct {
		Rows []struct {
			Layer   int
			Name    string
			TestAcc float64           `json:"test_acc"`
			ValAcc  float64           `json:"val_acc"`
			ValLoss float64           `json:"val_loss"`
			Grid    []probe.GridPoint `json:"grid"`
		} `json:"rows"`
		Baselines []struct {
			Name string
			Dim  int
		} `json:"baselines"`
		Concat  []struct{ Name string } `json:"concat"`
		LowData []struct {
			PerClass int       `json:"per_class"`
			Draws    int       `json:"draws"`
			TestAccs []float64 `json:"test_accs"`
		} `json:"low_data"`
		MaxIter  int              `json:"max_iter"`
		Patience int              `json:"patience"`
		Images   probe.SplitSizes `json:"images"`
		Summary  probe.Summary    `json:"summary"`
	}
	b, err := os.ReadFile(pm.Path(ReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 3 { // embedding + 2 layers
		t.Fatalf("report rows: %s", b)
	}
	// The report counts the images of each split it probed: the token
	// stage's train, val and test splits, each whole.
	qm := p.byName["quantize"].Manifest
	want := probe.SplitSizes{Train: int(qm.Records("train")), Val: int(qm.Records("val")), Test: int(qm.Records("test"))}
	if rep.Images != want || want.Val == 0 {
		t.Errorf("report images %+v; quantize wrote %+v", rep.Images, want)
	}
	// The headline is the val-chosen row, with its own test accuracy.
	best := rep.Rows[0]
	for _, row := range rep.Rows {
		if row.TestAcc < 0 || row.TestAcc > 1 {
			t.Errorf("%s: test accuracy %v outside [0, 1]", row.Name, row.TestAcc)
		}
	}
	for _, row := range rep.Rows[1:] {
		if row.ValAcc > best.ValAcc || (row.ValAcc == best.ValAcc && row.ValLoss < best.ValLoss) {
			best = row
		}
	}
	if rep.Summary.Best.Layer != best.Layer || rep.Summary.Best.TestAcc != best.TestAcc {
		t.Errorf("summary best %s (test %v); the val-chosen row is %s (test %v)",
			rep.Summary.Best.Name, rep.Summary.Best.TestAcc, best.Name, best.TestAcc)
	}
	if rep.MaxIter != 7 || rep.Patience != 1 {
		t.Fatalf("report max_iter %d, patience %d; the config asks for 7 and 1", rep.MaxIter, rep.Patience)
	}
	for _, row := range rep.Rows {
		for _, g := range row.Grid {
			if g.Iterations > 7 {
				t.Fatalf("%s, λ=%g: %d iterations, max_iter is 7", row.Name, g.L2, g.Iterations)
			}
		}
	}
	if len(rep.Concat) != 1 || !strings.Contains(rep.Concat[0].Name, "L1+L2") {
		t.Errorf("concat rows %+v, want one of layers 1 and 2", rep.Concat)
	}
	if len(rep.LowData) != 1 || rep.LowData[0].PerClass != 1 ||
		rep.LowData[0].Draws != 3 || len(rep.LowData[0].TestAccs) != 3 {
		t.Errorf("low-data rows %+v, want 1 per class, 3 draws", rep.LowData)
	}
	dims := map[string]int{}
	for _, b := range rep.Baselines {
		dims[b.Name] = b.Dim
	}
	if dims[probe.RawPixels] != 8*8*3 || dims[probe.RawPixelsInput] != 4*4*3 || len(dims) != 3 {
		t.Fatalf("baselines and their dimensions: %v; want raw pixels 192, at the input 48, and random init", dims)
	}
	if !strings.Contains(fmt.Sprint(rep.Baselines), "random init") {
		t.Fatalf("baselines: %v", rep.Baselines)
	}
	md, _ := os.ReadFile(pm.Path(ReportMD))
	if !strings.Contains(string(md), "| ") || !strings.Contains(string(md), "raw pixels") {
		t.Fatalf("report.md:\n%s", md)
	}
	if png, _ := os.ReadFile(pm.Path(ProbePNG)); len(png) < 1000 {
		t.Fatal("probe.png missing or empty")
	}
}

// TestProbeFeaturesBatchInvariant extracts features with batch 1 and batch
// 64: every feature must be the same.
func TestProbeFeaturesBatchInvariant(t *testing.T) {
	root := t.TempDir()
	p, err := runUntil(t, trainYAML(root, folderArchive(t, 8, nil), 10, 32, 2, 0.01), "train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	tm, qm := p.byName["train"].Manifest, p.byName["quantize"].Manifest
	var inputs []pipelines.ShardInput
	for _, f := range qm.Files {
		inputs = append(inputs, pipelines.ShardInput{Path: qm.Path(f.Name), Split: f.Split})
	}
	list := filepath.Join(t.TempDir(), "inputs.jsonl")
	if err := pipelines.WriteLines(context.Background(), list, inputs); err != nil {
		t.Fatal(err)
	}
	trained, err := ReadTrainOutput(tm)
	if err != nil {
		t.Fatal(err)
	}
	cfgOf := func(batch int, dir string) pipelines.ProbeConfig {
		return pipelines.ProbeConfig{Inputs: list, Weights: trained.Weights, Objective: "ar", Batch: batch, Dir: dir, Config: trained.Model}
	}
	feats := map[int]map[string][]float32{}
	for _, batch := range []int{1, 64} {
		dir := t.TempDir()
		if err := runProbePipeline(cfgOf(batch, dir)); err != nil {
			t.Fatal(err)
		}
		feats[batch] = map[string][]float32{}
		files, _ := filepath.Glob(filepath.Join(dir, "*.msgpack"))
		for _, f := range files {
			err := pipelines.ScanShard(context.Background(), f, func(x records.Features) error {
				feats[batch][fmt.Sprintf("%s@%d", x.Key, x.Layer)] = x.Vec
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(feats[1]) == 0 || len(feats[1]) != len(feats[64]) {
		t.Fatalf("%d features with batch 1, %d with batch 64", len(feats[1]), len(feats[64]))
	}
	worst := 0.0
	for k, a := range feats[1] {
		b := feats[64][k]
		for i := range a {
			worst = math.Max(worst, math.Abs(float64(a[i]-b[i]))/(1e-6+math.Abs(float64(a[i]))))
		}
	}
	if worst > 1e-5 {
		t.Fatalf("features differ between batch 1 and 64: worst relative difference %g", worst)
	}
	t.Logf("worst relative difference between batch 1 and 64: %g", worst)
}

// runProbePipeline runs the feature-extraction pipeline alone on prism.
func runProbePipeline(cfg pipelines.ProbeConfig) error {
	p, s := beam.NewPipelineWithRoot()
	if _, err := pipelines.Probe(s, cfg); err != nil {
		return err
	}
	_, err := runPipeline(context.Background(), &RunContext{Runner: "prism"}, p)
	return err
}

// TestSampleStage draws samples and completions from a tiny trained model:
// the grids exist and every completion keeps its image's top half.
func TestSampleStage(t *testing.T) {
	root := t.TempDir()
	yaml := trainYAML(root, folderArchive(t, 8, nil), 10, 32, 2, 0.01) + "probe: {baselines: false, l2: [0.01]}\nsample: {unconditional: 3, images: 2, completions: 2, scale: 2}\n"
	p, err := runUntil(t, yaml, "sample", Options{})
	if err != nil {
		t.Fatal(err)
	}
	sm, qm := p.byName["sample"].Manifest, p.byName["quantize"].Manifest
	for _, f := range []string{SamplesPNG, CompletionsPNG} {
		if b, err := os.ReadFile(sm.Path(f)); err != nil || len(b) < 100 {
			t.Fatalf("%s: %d bytes, %v", f, len(b), err)
		}
	}
	originals := map[string]records.Tokens{}
	for _, tk := range readAllTokens(t, qm, "test") {
		originals[tk.Key] = tk
	}
	n := 0
	err = pipelines.ScanShard(context.Background(), sm.Path(SamplesFile), func(tk records.Tokens) error {
		if !strings.HasPrefix(tk.Key, "completion/") {
			return nil
		}
		key := strings.TrimPrefix(tk.Key, "completion/")
		orig := originals[key[:strings.LastIndexByte(key, '/')]]
		half := len(tk.Tok) / 2
		if fmt.Sprint(tk.Tok[:half]) != fmt.Sprint(orig.Tok[:half]) {
			t.Errorf("%s does not keep the top half of its image", tk.Key)
		}
		n++
		return nil
	})
	if err != nil || n != 4 {
		t.Fatalf("%d completions, %v", n, err)
	}
	// A user's own picture, of another size, is resized, quantized and completed.
	grid, err := CompletePicture(context.Background(), p.byName["train"].Dir, pngBytes(20, 13, 90), 3, 0.5, model.SampleOptions{Seed: 1}, 2)
	if err != nil || !bytes.HasPrefix(grid, []byte("\x89PNG")) {
		t.Fatalf("completing a picture: %d bytes, %v", len(grid), err)
	}
	if _, err := CompletePicture(context.Background(), p.byName["train"].Dir, []byte("not an image"), 1, 0.5, model.SampleOptions{}, 1); err == nil || !strings.Contains(err.Error(), "PNG or JPEG") {
		t.Fatalf("a non-image picture: %v", err)
	}
}

// TestProbeBaselineCache probes two models of the same shape and data in
// one root: the second reuses the probe-baselines stage output of the first
// (one output, its rows marked reused in the report); the rows are refused
// for another model shape, and a damaged output names --force.
func TestProbeBaselineCache(t *testing.T) {
	root, src := t.TempDir(), folderArchive(t, 8, nil)
	probeYAML := "probe: {batch: 5, l2: [0.1, 0.001]}\n"
	report := func(steps int) (probe.Report, string) {
		t.Helper()
		p, err := runUntil(t, trainYAML(root, src, steps, 32, 2, 0.01)+probeYAML, "probe", Options{})
		if err != nil {
			t.Fatal(err)
		}
		pm := p.byName["probe"].Manifest
		b, err := os.ReadFile(pm.Path(ReportJSON))
		if err != nil {
			t.Fatal(err)
		}
		var rep probe.Report
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		md, _ := os.ReadFile(pm.Path(ReportMD))
		if len(rep.Baselines) != 2 {
			t.Fatalf("steps %d: baselines %+v", steps, rep.Baselines)
		}
		return rep, string(md)
	}
	same := func(a, b probe.Row) bool {
		return a.Name == b.Name && a.ValAcc == b.ValAcc && a.TestAcc == b.TestAcc && a.L2 == b.L2 && a.Dim == b.Dim
	}

	first, _ := report(20)
	for _, row := range first.Baselines {
		if row.Cached != "" {
			t.Fatalf("first run: %q came from an earlier run %s", row.Name, row.Cached)
		}
	}
	entries, _ := filepath.Glob(filepath.Join(root, "probe-baselines", "*", BaselinesFile))
	if len(entries) != 1 {
		t.Fatalf("probe-baselines outputs after the first run: %v", entries)
	}

	second, md := report(21) // another model (one more step), the same images and splits
	for i, row := range second.Baselines {
		if row.Cached != entries[0] || !same(row, first.Baselines[i]) {
			t.Fatalf("second run: baseline %+v, want the first run's %+v from %s", row, first.Baselines[i], entries[0])
		}
	}
	if !strings.Contains(md, "reused from") {
		t.Fatalf("report.md does not say a baseline was reused:\n%s", md)
	}
	if again, _ := filepath.Glob(filepath.Join(root, "probe-baselines", "*", BaselinesFile)); len(again) != 1 {
		t.Fatalf("probe-baselines outputs after a second model of the same shape: %v", again)
	}

	bm, err := ReadManifest(context.Background(), filepath.Dir(entries[0]))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ReadProbeBaselines(context.Background(), bm, model.Config{Layers: 9, D: 8, Heads: 1, Seq: 16, Vocab: 4}, "ar")
	if err == nil || !strings.Contains(err.Error(), "the trained model is L9") {
		t.Fatalf("baselines of another shape: %v, %v", rows, err)
	}
	os.WriteFile(entries[0], []byte(`{"rows": `), 0o644)
	if _, err := ReadProbeBaselines(context.Background(), bm, model.Config{}, "ar"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("damaged baselines: %v", err)
	}
}

// TestProbePoolGrid probes with probe.pool_grid: 2 on 4×4 token grids:
// every layer and the random-init baseline get 4·d features (one mean per
// quadrant), the report says how they were pooled, and a grid of 5 regions
// per side, more than the tokens have, is refused before any feature is
// made.
func TestProbePoolGrid(t *testing.T) {
	root := t.TempDir()
	base := strings.Replace(trainYAML(root, folderArchive(t, 8, nil), 20, 32, 2, 0.01), "quantize: {", "quantize: {resize: [4, 4], ", 1)
	p, err := runUntil(t, base+"probe: {batch: 5, l2: [0.1], max_iter: 5, pool_grid: 2}\n", "probe", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pm := p.byName["probe"].Manifest
	var rep probe.Report
	b, err := os.ReadFile(pm.Path(ReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	trained, err := ReadTrainOutput(p.byName["train"].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	d := trained.Model.D
	for _, row := range append(append([]probe.Row{}, rep.Rows...), rep.Baselines...) {
		want := 4 * d
		if row.Name == probe.RawPixels {
			want = 8 * 8 * 3
		}
		if row.Dim != want {
			t.Errorf("%s: %d features, want %d", row.Name, row.Dim, want)
		}
	}
	if rep.PoolGrid != 2 {
		t.Errorf("report pool_grid %d, want 2", rep.PoolGrid)
	}
	if md, _ := os.ReadFile(pm.Path(ReportMD)); !strings.Contains(string(md), "2×2 grid") {
		t.Errorf("report.md does not say how the features were pooled:\n%s", md)
	}
	_, err = runUntil(t, base+"probe: {batch: 5, l2: [0.1], max_iter: 5, pool_grid: 5}\n", "probe", Options{})
	if err == nil || !strings.Contains(err.Error(), "at most 4") {
		t.Fatalf("pool_grid 5 on 4x4 tokens: %v; want a refusal naming the largest grid, 4", err)
	}
}
