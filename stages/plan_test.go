package stages

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/storage"
)

// fakeStage writes one file and counts its runs; its params are read from
// the config by a function so tests can make stages depend on any key.
type fakeStage struct {
	name   string
	ups    []string
	params func(*Config) any
	runs   *int
	fail   error
}

func (f fakeStage) Name() string              { return f.name }
func (f fakeStage) Version() int              { return 1 }
func (f fakeStage) Upstream(*Config) []string { return f.ups }
func (f fakeStage) Params(c *Config) any      { return f.params(c) }
func (f fakeStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	*f.runs++
	if f.fail != nil {
		return nil, f.fail
	}
	for _, up := range f.ups {
		if rc.Inputs[up] == nil {
			return nil, errors.New("missing input " + up)
		}
	}
	if err := storage.WriteFile(ctx, storage.Join(rc.Dir, "out.txt"), []byte(rc.Key)); err != nil {
		return nil, err
	}
	return &Output{Files: []FileInfo{{Name: "out.txt", Split: "train", Records: 3, Bytes: 12}}}, nil
}

// chain builds a → b → c where a depends on dataset.name, b on
// download.shards and c on nothing of the config.
func chain(runs map[string]*int) map[string]Stage {
	for _, n := range []string{"a", "b", "c"} {
		runs[n] = new(int)
	}
	return map[string]Stage{
		"a": fakeStage{name: "a", params: func(c *Config) any { return c.Dataset }, runs: runs["a"]},
		"b": fakeStage{name: "b", ups: []string{"a"}, params: func(c *Config) any { return c.Download }, runs: runs["b"]},
		"c": fakeStage{name: "c", ups: []string{"b"}, params: func(c *Config) any { return struct{}{} }, runs: runs["c"]},
	}
}

func testConfig(t *testing.T) *Config {
	cfg, err := ParseConfig([]byte("root: " + t.TempDir() + "\ndataset: {name: cifar10}\ndownload: {shard_mib: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func keys(t *testing.T, cfg *Config, reg map[string]Stage) map[string]string {
	t.Helper()
	p, err := newPlan(context.Background(), cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, st := range p.Steps {
		out[st.Stage.Name()] = st.Key
	}
	return out
}

func TestKeysPropagateDownstreamOnly(t *testing.T) {
	reg := chain(map[string]*int{})
	cfg := testConfig(t)
	base := keys(t, cfg, reg)
	if again := keys(t, cfg, reg); again["a"] != base["a"] || again["c"] != base["c"] {
		t.Fatal("keys are not deterministic")
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		changed []string
	}{
		{"root and runner change nothing", func(c *Config) { c.Root = t.TempDir(); c.Runner = "direct" }, nil},
		{"download.shard_mib changes b and c", func(c *Config) { c.Download.ShardMiB = 3 }, []string{"b", "c"}},
		{"dataset.name changes all", func(c *Config) { c.Dataset.Name = "mnist" }, []string{"a", "b", "c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t)
			tc.edit(c)
			got := keys(t, c, reg)
			for _, n := range []string{"a", "b", "c"} {
				want := false
				for _, ch := range tc.changed {
					want = want || ch == n
				}
				if (got[n] != base[n]) != want {
					t.Errorf("stage %s: key %s -> %s, changed=%v, want changed=%v", n, base[n], got[n], got[n] != base[n], want)
				}
			}
		})
	}
}

func TestRunSkipsForceAndManifest(t *testing.T) {
	ctx := context.Background()
	runs := map[string]*int{}
	reg := chain(runs)
	cfg := testConfig(t)
	p, _ := newPlan(ctx, cfg, reg)
	if err := p.RunAll(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		if *runs[n] != 1 {
			t.Fatalf("stage %s ran %d times", n, *runs[n])
		}
	}
	m, err := ReadManifest(ctx, filepath.Join(cfg.Root, "b", p.byName["b"].Key))
	if err != nil {
		t.Fatal(err)
	}
	if m.Stage != "b" || len(m.Inputs) != 1 || m.Inputs[0].Stage != "a" || m.Inputs[0].Key != p.byName["a"].Key || m.Records("train") != 3 {
		t.Fatalf("manifest %+v", m)
	}

	// A second plan sees everything done and runs nothing.
	p, _ = newPlan(ctx, cfg, reg)
	var out bytes.Buffer
	if err := p.RunAll(ctx, Options{Out: &out}); err != nil {
		t.Fatal(err)
	}
	if *runs["a"]+*runs["b"]+*runs["c"] != 3 || strings.Count(out.String(), "skip (done)") != 3 {
		t.Fatalf("second run ran stages: %v\n%s", runs, out.String())
	}

	// --force on one stage reruns exactly that stage.
	if err := p.RunOne(ctx, "b", Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	if *runs["a"] != 1 || *runs["b"] != 2 || *runs["c"] != 1 {
		t.Fatalf("after --force b: a=%d b=%d c=%d", *runs["a"], *runs["b"], *runs["c"])
	}

	// --dry_run runs nothing.
	if err := p.RunAll(ctx, Options{Force: true, DryRun: true, Out: &out}); err != nil || *runs["a"] != 1 {
		t.Fatalf("dry run ran a stage: %v", err)
	}
}

func TestRunOneNeedsUpstream(t *testing.T) {
	ctx := context.Background()
	reg := chain(map[string]*int{})
	cfg := testConfig(t)
	cfg.Path = "exp.yaml"
	p, _ := newPlan(ctx, cfg, reg)
	err := p.RunOne(ctx, "b", Options{})
	if !errors.Is(err, ErrUpstreamMissing) || !strings.Contains(err.Error(), "igpt stage a exp.yaml") || !strings.Contains(err.Error(), ManifestName) {
		t.Fatalf("RunOne(b) without a: %v", err)
	}
	// The suggested command repeats the flags that chose this plan.
	err = p.RunOne(ctx, "b", Options{Rerun: "--root=/tmp/x"})
	if !strings.Contains(err.Error(), "igpt stage a exp.yaml --root=/tmp/x") {
		t.Fatalf("RunOne(b) without a, --root given: %v", err)
	}
}

// TestSummary: after a run, one row per stage it took with what it did,
// and the report and pictures the stages listed.
func TestSummary(t *testing.T) {
	ctx := context.Background()
	runs := map[string]*int{}
	reg := chain(runs)
	reg["c"] = fakeStage{name: "c", ups: []string{"b"}, params: func(c *Config) any { return struct{}{} }, runs: runs["c"], fail: errors.New("boom")}
	cfg := testConfig(t)
	p, _ := newPlan(ctx, cfg, reg)
	if err := p.RunUntil(ctx, "a", Options{}); err != nil {
		t.Fatal(err)
	}
	p, _ = newPlan(ctx, cfg, reg)
	if err := p.RunAll(ctx, Options{}); err == nil {
		t.Fatal("c did not fail")
	}
	var b bytes.Buffer
	p.Summary(ctx, &b)
	for _, want := range []string{"STAGE", "a  ", "skipped (done)", "b  ", " ran ", "c  ", "failed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary has no %q:\n%s", want, &b)
		}
	}
	if strings.Contains(b.String(), "Reports and pictures") {
		t.Errorf("fake stages wrote no report or picture, summary lists some:\n%s", &b)
	}
}

func TestHeadline(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	report := `{"rows": [], "summary": {"best": {"layer": 2, "name": "layer 2", "test_acc": 0.425}, "margin_over_raw_pixels_points": 5.5}}`
	if err := os.WriteFile(filepath.Join(dir, ReportJSON), []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	// A model below raw pixels: "2.2 points below", not "-2.2 points over".
	below := t.TempDir()
	report = `{"rows": [], "summary": {"best": {"layer": 1, "name": "layer 1", "test_acc": 0.39}, "margin_over_raw_pixels_points": -2.2, "margin_over_input_pixels_points": -0.04}}`
	if err := os.WriteFile(filepath.Join(below, ReportJSON), []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m    Manifest
		want string
	}{
		{Manifest{Stage: "palette", Meta: map[string]any{"mse_per_pixel": 74.77}}, "palette MSE 74.8 per pixel"},
		{Manifest{Stage: "train", Meta: map[string]any{"final_val_loss": 2.7741, "steps": 9000.0}}, "val loss 2.774 nats/token after 9000 steps"},
		{Manifest{Stage: "train", Meta: map[string]any{"final_val_loss": 3.9221, "steps": 6000.0, "minutes": 88.04}}, "val loss 3.922 nats/token after 6000 steps (88.0 min of training)"},
		{Manifest{Stage: "probe", Dir: dir}, "best layer 2 42.5% test, 5.5 points above raw pixels (37.0%)"},
		{Manifest{Stage: "probe", Dir: below}, "best layer 1 39.0% test, 2.2 points below raw pixels (41.2%), level with (within 0.05 points) them at the input resolution"},
		{Manifest{Stage: "probe", Dir: t.TempDir()}, "-"},
		{Manifest{Stage: "vqvae-train", Meta: map[string]any{"eval_mse_255": 660.1, "eval_psnr": 24.71}}, "reconstruction MSE 660.1 (PSNR 24.71 dB)"},
		{Manifest{Stage: "vqvae-train", Meta: map[string]any{"eval_mse_255": 660.1, "eval_psnr": 24.71, "test_mse_255": 670.2, "test_psnr": 24.65, "minutes": 30.12}},
			"test reconstruction MSE 670.2 (PSNR 24.65 dB), 30.1 min of training"},
		{Manifest{Stage: "quantize", Files: []FileInfo{{Split: "train", Records: 7}, {Split: "test", Records: 3}}}, "10 records"},
		{Manifest{Stage: "train"}, "-"},
		{Manifest{Stage: "sample", Files: []FileInfo{{Name: "samples.png"}, {Name: "completions.png"}, {Name: "x.msgpack"}}}, "2 pictures"},
		{Manifest{Stage: "finetune", Meta: map[string]any{"init": "pretrained", "test_acc": 0.6312, "best_step": 1400.0, "steps": 2000.0, "stopped": "patience"}},
			"pretrained: 63.1% test (best val at step 1400 of 2000, stopped by patience)"},
	} {
		if got := headline(ctx, &tc.m); got != tc.want {
			t.Errorf("%s headline = %q, want %q", tc.m.Stage, got, tc.want)
		}
	}
}

// TestFailedStageLeavesNoManifest checks that a failing stage publishes
// nothing and that leftovers of an interrupted run are cleared on rerun.
func TestFailedStageLeavesNoManifest(t *testing.T) {
	ctx := context.Background()
	runs := 0
	boom := errors.New("boom")
	reg := map[string]Stage{"a": fakeStage{name: "a", params: func(c *Config) any { return 1 }, runs: &runs, fail: boom}}
	cfg := testConfig(t)
	p, _ := newPlan(ctx, cfg, reg)
	leftover := filepath.Join(p.Steps[0].Dir, "partial.msgpack")
	os.MkdirAll(filepath.Dir(leftover), 0o755)
	os.WriteFile(leftover, []byte("x"), 0o644)
	if err := p.RunAll(ctx, Options{}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(p.Steps[0].Dir, ManifestName)); !os.IsNotExist(err) {
		t.Fatal("manifest written for a failed stage")
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatal("leftover of an interrupted run was not cleared")
	}
}
