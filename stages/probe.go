package stages

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/progress"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/pipelines"
)

func init() { Register(probeStage{}) }

// Files of the probe stage.
const (
	ReportJSON = "report.json"
	ReportMD   = "report.md"
	ProbePNG   = "probe.png"
)

// probeStage measures the trained model's representations: features of
// every layer from a batched Beam pipeline, then one logistic-regression
// probe per layer, with raw-pixel and random-init baselines.
type probeStage struct{}

func (probeStage) Name() string { return "probe" }
func (probeStage) Version() int { return 1 }
func (probeStage) Upstream(cfg *Config) []string {
	return []string{"download", cfg.TokensStage(), "train", "probe-baselines"}
}
func (probeStage) Params(cfg *Config) any { return cfg.Probe }

// ProbeParams configures the linear probes.
type ProbeParams struct {
	// Batch is the number of records per forward pass (default 64).
	Batch int `yaml:"batch" json:"batch"`
	// L2 is the grid of L2 strengths λ (objective: mean cross-entropy +
	// λ/2·|W|²) tried on the val split; default 1e-1 … 1e-5.
	L2 []float64 `yaml:"l2" json:"l2"`
	// MaxIter caps the L-BFGS iterations of each fit (0: scikit-learn's
	// 1000). Weak λ values on wide features need more to converge.
	MaxIter int `yaml:"max_iter" json:"max_iter,omitempty"`
	// Patience stops each row's grid, fitted from the strongest λ down,
	// after this many λ in a row score below the best validation accuracy
	// so far (0: fit every λ). The weakest λ values cost the most
	// iterations; where accuracy already falls (raw pixels past λ = 0.1)
	// they only overfit further.
	Patience int `yaml:"patience" json:"patience,omitempty"`
	// MaxTrain caps the training records used to fit each probe (0: all).
	MaxTrain int `yaml:"max_train" json:"max_train,omitempty"`
	// MaxPerShard caps the records read from each Tokens shard (0: all),
	// to probe a sample of a large dataset; shards are shuffled, so the
	// first records of each are a random sample.
	MaxPerShard int `yaml:"max_per_shard" json:"max_per_shard,omitempty"`
	// MaxEval caps the val and the test records each (0: all), sampled
	// evenly over the split's shards as max_train is. With max_train it
	// bounds the features the probe's driver holds (probe_features.go).
	MaxEval int `yaml:"max_eval" json:"max_eval,omitempty"`
	// Baselines adds raw pixels and a randomly initialised model of the
	// same config to the report (default true).
	Baselines *bool `yaml:"baselines" json:"baselines"`
	// Seed of the random-init baseline and of the val hold-out when the
	// tokens have no val split.
	Seed uint64 `yaml:"seed" json:"seed"`

	// LabelsPerClass adds the paper's low-data probes of the best layer:
	// for each k, LowDataDraws seeded draws of k labelled train images per
	// class (e.g. [4, 25, 100]), reported as mean ± std test accuracy.
	LabelsPerClass []int `yaml:"labels_per_class" json:"labels_per_class,omitempty"`
	// LowDataDraws is the number of draws per k (0: 5).
	LowDataDraws int `yaml:"low_data_draws" json:"low_data_draws,omitempty"`
	// Concat adds a probe of these layers' features concatenated (the
	// paper's 5-layer concatenation), e.g. [1, 2, 3].
	Concat []int `yaml:"concat" json:"concat,omitempty"`
	// RawPixels picks the raw-pixel baselines: "original" (the images as
	// downloaded; the default), "input" (area-resized to the resolution the
	// tokens were made from: the token grid for palette tokens, the grid
	// times the VQ-VAE's factor for codes) or "both". The default is kept
	// as "" so that the key did not change for configs written before it.
	RawPixels string `yaml:"raw_pixels" json:"raw_pixels,omitempty"`
	// PoolGrid pools each layer's features over an n×n grid of regions of
	// the token grid, the regions' means side by side (n²·d features),
	// as Coates, Lee & Ng (2011) pool over quadrants (n = 2); 1 (the
	// default, stored as 0) is the paper's mean over all positions.
	PoolGrid int `yaml:"pool_grid" json:"pool_grid,omitempty"`
}

func (p *ProbeParams) fillDefaults() {
	if p.Batch == 0 {
		p.Batch = 64
	}
	if len(p.L2) == 0 {
		p.L2 = []float64{1e-1, 1e-2, 1e-3, 1e-4, 1e-5}
	}
	if p.Baselines == nil {
		b := true
		p.Baselines = &b
	}
	// Defaults a config may spell out are stored as when left out (0 or
	// ""), so that both give one key.
	if p.RawPixels == RawOriginal {
		p.RawPixels = ""
	}
	if p.MaxIter == probe.DefaultMaxIter {
		p.MaxIter = 0
	}
	if p.LowDataDraws == probe.DefaultDraws {
		p.LowDataDraws = 0
	}
	if p.PoolGrid == 1 {
		p.PoolGrid = 0
	}
}

// The values of probe.raw_pixels.
const (
	RawOriginal = "original"
	RawInput    = "input"
	RawBoth     = "both"
)

func (p ProbeParams) check() error {
	if p.RawPixels != "" && p.RawPixels != RawInput && p.RawPixels != RawBoth {
		return fmt.Errorf("probe.raw_pixels is %q: want original, input or both", p.RawPixels)
	}
	return nil
}

func (probeStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	pc := rc.Config.Probe
	params, trained, err := LoadTrained(ctx, rc.Inputs["train"])
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	mc := params.Config
	if err := checkProbeMemory(mc, pc); err != nil {
		return nil, err
	}
	qm := rc.Inputs[rc.Config.TokensStage()]
	if err := checkProbeFeatureMemory("probe", qm, pc, probeWidth{"a layer", mc.D}, probeWidth{"probe.concat", mc.D * len(pc.Concat)}); err != nil {
		return nil, err
	}
	if q, err := ReadTokensOutput(qm); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	} else if q.Vocab != mc.Vocab {
		return nil, fmt.Errorf("probe: the model in %s has a vocabulary of %d tokens, but the %s tokens in %s have %d: it was trained on other tokens; rerun train",
			rc.Inputs["train"].Dir, mc.Vocab, qm.Stage, qm.Dir, q.Vocab)
	}
	if err := checkPoolGrid(ctx, qm, pc.PoolGrid); err != nil {
		return nil, err
	}
	ex, err := newExtractor(ctx, rc, mc, trained.Objective)
	if err != nil {
		return nil, err
	}
	opts := probeOptions(rc)
	start := time.Now()
	featDir := storage.Join(rc.Dir, "features")
	job, err := ex.run(featDir, trained.Weights)
	if err != nil {
		return nil, err
	}
	extractS := time.Since(start).Seconds()
	src, err := openFeatures(ctx, featDir, probeCaps(pc), pc.Seed)
	if err != nil {
		return nil, err
	}
	records := src.records()
	rc.Log.Info("probe: features extracted", "records", records, "layers", mc.Layers+1, "elapsed_s", extractS,
		"images_per_s", float64(records)/extractS)
	start = time.Now()
	bar := fitsBar(rc, &opts, mc.Layers+1)
	rep, err := probe.LayersFrom(src.layers(), src.split, pc.L2, opts)
	bar.Finish()
	if err != nil {
		return nil, err
	}
	rep.Title = fmt.Sprintf("Linear probes: %v (%s), %s", mc, trained.Objective, rc.Config.Dataset.Name)
	rep.PoolGrid = pc.PoolGrid
	opts.Fit.Progress = nil // the bar is finished
	if err := addVariants(rep, src.splits, pc, opts, mc.Layers); err != nil {
		return nil, err
	}
	if *pc.Baselines {
		rows, err := ReadProbeBaselines(ctx, rc.Inputs["probe-baselines"], mc, trained.Objective)
		if err != nil {
			return nil, err
		}
		bm := rc.Inputs["probe-baselines"]
		for _, row := range rows {
			if bm.Finished.Before(rc.Inputs["train"].Started) {
				row.Cached = bm.Path(BaselinesFile) // fitted before this model was trained
			}
			rep.AddBaseline(row)
		}
	}
	out := &Output{JobID: job, Meta: map[string]any{"extract_s": extractS, "images_per_s": float64(records) / extractS,
		"fit_s": time.Since(start).Seconds(), "model": mc, "weights": trained.Weights}}
	if best, ok := rep.Best(); ok {
		out.Meta["best_layer"], out.Meta["best_test_acc"] = best.Layer, best.TestAcc
	}
	return out, writeReports(ctx, rc.Dir, rep, out)
}

// probeOptions are the fit settings of every probe of a run.
func probeOptions(rc *RunContext) probe.Options {
	pc := rc.Config.Probe
	return probe.Options{Standardize: true, Logger: rc.Log, Fit: probe.FitOptions{MaxIter: pc.MaxIter, Patience: pc.Patience}}
}

// writeReports writes the report as JSON, Markdown and a plot, listing
// each in out.
func writeReports(ctx context.Context, dir string, rep *probe.Report, out *Output) error {
	for _, w := range []struct {
		name  string
		write func(io.Writer) error
	}{{ReportJSON, rep.WriteJSON}, {ReportMD, rep.WriteMarkdown}, {ProbePNG, rep.PlotPNG}} {
		var buf bytes.Buffer
		if err := w.write(&buf); err != nil {
			return fmt.Errorf("probe: %s: %w", w.name, err)
		}
		if err := storage.WriteFile(ctx, storage.Join(dir, w.name), buf.Bytes()); err != nil {
			return err
		}
		out.Files = append(out.Files, FileInfo{Name: w.name, Bytes: int64(buf.Len())})
	}
	return nil
}

// extractor runs the feature-extraction pipeline over the quantize
// output's shards, listed once for every run of it.
type extractor struct {
	ctx       context.Context
	rc        *RunContext
	mc        model.Config
	objective string
	list      string         // the shard list file
	perShard  map[string]int // records read from each shard of a split (probeShardCaps)
}

func newExtractor(ctx context.Context, rc *RunContext, mc model.Config, objective string) (*extractor, error) {
	pc, qm := rc.Config.Probe, rc.Inputs[rc.Config.TokensStage()]
	var inputs []pipelines.ShardInput
	for _, f := range qm.Files {
		if f.Split != "" {
			inputs = append(inputs, pipelines.ShardInput{Path: qm.Path(f.Name), Split: f.Split})
		}
	}
	ex := &extractor{ctx: ctx, rc: rc, mc: mc, objective: objective, list: storage.Join(rc.Dir, InputsName)}
	if err := pipelines.WriteLines(ctx, ex.list, inputs); err != nil {
		return nil, err
	}
	// max_train and max_eval are sampled in the workers, evenly over each
	// split's shards (the driver keeps the first max_train or max_eval of
	// what they wrote).
	ex.perShard = probeShardCaps(qm, pc)
	return ex, nil
}

// run writes the features of every layer of the model with weights ("":
// a random initialisation) into dir and returns the job's id.
func (ex *extractor) run(dir, weights string) (string, error) {
	pc := ex.rc.Config.Probe
	defer progress.Start(progress.ProbeFeatures, 0, probeRecords(ex.rc.Inputs[ex.rc.Config.TokensStage()], pc.MaxPerShard, ex.perShard), ex.rc.Log).Finish()
	p, s := beam.NewPipelineWithRoot()
	if _, err := pipelines.Probe(s, pipelines.ProbeConfig{Inputs: ex.list, Weights: weights, Config: ex.mc, Seed: pc.Seed,
		Objective: ex.objective, Batch: pc.Batch, MaxPerShard: pc.MaxPerShard,
		MaxPerSplitShard: ex.perShard, PoolGrid: pc.PoolGrid, Dir: dir}); err != nil {
		return "", err
	}
	return runPipeline(ex.ctx, ex.rc, p)
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// rawPixelBaseline probes the images' pixels scaled to [0, 1], at their
// own size (h = 0) or area-resized to h×w, split exactly as the tokens
// were, as the row called name. A Beam pipeline writes their features
// into sub (the workers read the Image shards; the driver lists the keys).
func rawPixelBaseline(ctx context.Context, rc *RunContext, splitKeys map[string][]string, pc ProbeParams,
	opts probe.Options, name, sub string, h, w int) (probe.Row, error) {
	var keys []pipelines.KeySplit
	for split, ks := range splitKeys {
		for _, k := range ks {
			keys = append(keys, pipelines.KeySplit{Key: k, Split: split})
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Key < keys[j].Key })
	dir := storage.Join(rc.Dir, sub)
	keysFile, imagesFile := storage.Join(dir, "_keys.jsonl"), storage.Join(dir, InputsName)
	var images []pipelines.ShardInput
	dl := rc.Inputs["download"]
	for _, f := range dl.Files {
		if f.Split != "" {
			images = append(images, pipelines.ShardInput{Path: dl.Path(f.Name), Split: f.Split})
		}
	}
	if err := pipelines.WriteLines(ctx, keysFile, keys); err != nil {
		return probe.Row{}, err
	}
	if err := pipelines.WriteLines(ctx, imagesFile, images); err != nil {
		return probe.Row{}, err
	}
	p, s := beam.NewPipelineWithRoot()
	pipelines.RawPixels(s, imagesFile, keysFile, dir, h, w)
	if _, err := runPipeline(ctx, rc, p); err != nil {
		return probe.Row{}, err
	}
	raw, err := openFeatures(ctx, dir, nil, pc.Seed)
	if err != nil {
		return probe.Row{}, err
	}
	rawSplit, err := raw.split(0)
	if err != nil {
		return probe.Row{}, fmt.Errorf("probe: %s baseline: %w", name, err)
	}
	return probe.Baseline(name, rawSplit, pc.L2, opts)
}

// randomInitBaseline runs the same pipeline with untrained weights and
// returns its best layer's row and the keys of each split it probed.
func randomInitBaseline(ctx context.Context, rc *RunContext, ex *extractor,
	pc ProbeParams, opts probe.Options) (probe.Row, map[string][]string, error) {
	dir := storage.Join(rc.Dir, "features-random-init")
	if _, err := ex.run(dir, ""); err != nil {
		return probe.Row{}, nil, err
	}
	src, err := openFeatures(ctx, dir, probeCaps(pc), pc.Seed)
	if err != nil {
		return probe.Row{}, nil, err
	}
	rrep, err := probe.LayersFrom(src.layers(), src.split, pc.L2, opts)
	if err != nil {
		return probe.Row{}, nil, err
	}
	row, ok := probe.BaselineFromBest(probe.RandomInitPrefix, rrep)
	if !ok {
		return probe.Row{}, nil, fmt.Errorf("probe: random-init baseline: no layer was probed")
	}
	keys, err := src.keys()
	if err != nil {
		return probe.Row{}, nil, err
	}
	return row, keys, nil
}

// probeRecords is how many records the feature pipeline reads from the
// token output: its progress bar's total.
func probeRecords(qm *Manifest, maxPerShard int, perShard map[string]int) int64 {
	var n int64
	for _, f := range qm.Files {
		lim := int64(pipelines.ShardLimit(f.Split, maxPerShard, perShard))
		switch {
		case f.Split == "":
		case lim > 0 && lim < f.Records:
			n += lim
		default:
			n += f.Records
		}
	}
	return n
}

// fitsBar starts the progress bar of rows probe rows' fits (a λ grid
// each) and has opts report to it.
func fitsBar(rc *RunContext, opts *probe.Options, rows int) *progress.Bar {
	pc := rc.Config.Probe
	bar := progress.Start("probe: fits", 0, int64(rows*len(pc.L2)), rc.Log)
	opts.Fit.Progress = func(k int) { bar.Add(int64(k)) }
	return bar
}

// addVariants adds the probes the config asks for beside the per-layer
// ones: the concatenation of probe.concat's layers, and the low-data
// probes of the best layer (probe.labels_per_class).
func addVariants(rep *probe.Report, load func(layers ...int) (map[int]probe.Split, error), pc ProbeParams, opts probe.Options, layers int) error {
	if len(pc.Concat) > 0 {
		for _, l := range pc.Concat {
			if l > layers {
				return fmt.Errorf("probe.concat lists layer %d, but the model has %d layers", l, layers)
			}
		}
		splits, err := load(slices.Compact(slices.Sorted(slices.Values(pc.Concat)))...)
		if err != nil {
			return err
		}
		row, err := probe.ConcatRow(splits, pc.Concat, pc.L2, opts)
		if err != nil {
			return err
		}
		rep.AddConcat(row)
	}
	if len(pc.LabelsPerClass) > 0 {
		best, ok := rep.Best()
		if !ok {
			return fmt.Errorf("probe: no layer to run the low-data probes on")
		}
		splits, err := load(best.Layer)
		if err != nil {
			return err
		}
		rows, err := probe.LowData(best.Layer, best.Name, splits[best.Layer], pc.L2,
			probe.LowDataOptions{PerClass: pc.LabelsPerClass, Draws: pc.LowDataDraws, Seed: pc.Seed, Probe: opts})
		if err != nil {
			return err
		}
		rep.AddLowData(rows...)
	}
	return nil
}

// checkPoolGrid refuses a probe.pool_grid with more regions per side than
// the token grid of qm's records has tokens, before any feature is made.
func checkPoolGrid(ctx context.Context, qm *Manifest, n int) error {
	if n <= 1 {
		return nil
	}
	h, w, err := TokensGrid(ctx, qm)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if n > h || n > w {
		return fmt.Errorf("probe: probe.pool_grid is %d, but the %s tokens in %s are %dx%d grids: a region would be empty; set probe.pool_grid to at most %d", n, qm.Stage, qm.Dir, h, w, min(h, w))
	}
	return nil
}
