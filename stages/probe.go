package stages

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/progress"
	"github.com/igpt/igpt/internal/records"
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

func (probeStage) Name() string           { return "probe" }
func (probeStage) Version() int           { return 1 }
func (probeStage) Upstream() []string     { return []string{"download", "quantize", "train"} }
func (probeStage) Params(cfg *Config) any { return cfg.Probe }

func (probeStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	pc := rc.Config.Probe
	qm, tm := rc.Inputs["quantize"], rc.Inputs["train"]
	ckpt, _ := tm.Meta["checkpoint"].(string)
	weights := tm.Path(storage.Join(ckpt, WeightsFile))
	b, err := storage.ReadFile(ctx, weights)
	if err != nil {
		return nil, fmt.Errorf("probe: the train stage's final checkpoint: %w", err)
	}
	params, _, err := model.LoadCheckpoint(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("probe: %s: %w", weights, err)
	}
	mc := params.Config
	var inputs []pipelines.ShardInput
	trainShards := 0
	for _, f := range qm.Files {
		if f.Split != "" {
			inputs = append(inputs, pipelines.ShardInput{Path: qm.Path(f.Name), Split: f.Split})
		}
		if f.Split == "train" {
			trainShards++
		}
	}
	list := storage.Join(rc.Dir, InputsName)
	if err := pipelines.WriteLines(ctx, list, inputs); err != nil {
		return nil, err
	}
	// max_train is sampled in the workers, evenly over the train shards
	// (the driver keeps the first max_train of what they wrote).
	maxTrainPerShard := 0
	if pc.MaxTrain > 0 && trainShards > 0 {
		maxTrainPerShard = (pc.MaxTrain + trainShards - 1) / trainShards
	}
	objective := rc.Config.Train.Objective
	extract := func(dir, weights string) (string, error) {
		defer progress.Start(progress.ProbeFeatures, 0, probeRecords(qm, pc.MaxPerShard, maxTrainPerShard), rc.Log).Finish()
		p, s := beam.NewPipelineWithRoot()
		if err := pipelines.Probe(s, pipelines.ProbeConfig{Inputs: list, Weights: weights, Config: mc, Seed: pc.Seed,
			Objective: objective, Batch: pc.Batch, MaxPerShard: pc.MaxPerShard, MaxTrainPerShard: maxTrainPerShard, Dir: dir}); err != nil {
			return "", err
		}
		return runPipeline(ctx, rc, p)
	}
	opts := probe.ProbeOptions{Standardize: true, Logger: rc.Log,
		Fit: probe.Options{MaxIter: pc.MaxIter, Patience: pc.Patience}}
	start := time.Now()
	featDir := storage.Join(rc.Dir, "features")
	job, err := extract(featDir, weights)
	if err != nil {
		return nil, err
	}
	extractS := time.Since(start).Seconds()
	sets, err := readFeatureSets(ctx, featDir, pc.MaxTrain)
	if err != nil {
		return nil, err
	}
	splits, err := probe.AssembleSplits(sets["train"], sets["val"], sets["test"], 0.1, pc.Seed)
	if err != nil {
		return nil, err
	}
	records := sets["train"].Len(0) + sets["test"].Len(0)
	if sets["val"] != nil {
		records += sets["val"].Len(0)
	}
	rc.Log.Info("probe: features extracted", "records", records, "layers", mc.Layers+1, "elapsed_s", extractS,
		"images_per_s", float64(records)/extractS)
	start = time.Now()
	defer fitsBar(rc, &opts, mc.Layers).Finish()
	rep, err := probe.ProbeLayers(splits, pc.L2, opts)
	if err != nil {
		return nil, err
	}
	rep.Title = fmt.Sprintf("Linear probes: %v (%s), %s", mc, objective, rc.Config.Dataset.Name)
	if *pc.Baselines {
		if err := addBaselines(ctx, rc, rep, sets, extract, pc, opts, mc); err != nil {
			return nil, err
		}
	}
	fitS := time.Since(start).Seconds()
	out := &Output{JobID: job, Meta: map[string]any{"extract_s": extractS, "images_per_s": float64(records) / extractS,
		"fit_s": fitS, "model": mc, "weights": weights}}
	if best, ok := rep.Best(); ok {
		out.Meta["best_layer"], out.Meta["best_test_acc"] = best.Layer, best.TestAcc
	}
	for _, w := range []struct {
		name  string
		write func(io.Writer) error
	}{{ReportJSON, rep.WriteJSON}, {ReportMD, rep.WriteMarkdown}, {ProbePNG, rep.PlotPNG}} {
		var buf bytes.Buffer
		if err := w.write(&buf); err != nil {
			return nil, fmt.Errorf("probe: %s: %w", w.name, err)
		}
		if err := storage.WriteFile(ctx, storage.Join(rc.Dir, w.name), buf.Bytes()); err != nil {
			return nil, err
		}
		out.Files = append(out.Files, FileInfo{Name: w.name, Bytes: int64(buf.Len())})
	}
	return out, nil
}

// readFeatureSets reads every Features shard of a folder into one set per
// split, keeping at most maxTrain train records (by key order) when set.
func readFeatureSets(ctx context.Context, dir string, maxTrain int) (map[string]*probe.FeatureSet, error) {
	st, err := pipelines.ReadDownloadStats(ctx, dir)
	if err != nil {
		return nil, err
	}
	sets := map[string]*probe.FeatureSet{}
	for _, sh := range st.Shards {
		if sets[sh.Split] == nil {
			sets[sh.Split] = probe.NewFeatureSet(sh.Split)
		}
		set := sets[sh.Split]
		if err := pipelines.ScanShard(ctx, storage.Join(dir, sh.Name), func(f records.Features) error {
			if sh.Split == "train" && maxTrain > 0 && set.Len(f.Layer) >= maxTrain {
				return nil
			}
			return set.Add(f)
		}); err != nil {
			return nil, err
		}
	}
	if sets["train"] == nil || sets["test"] == nil {
		return nil, fmt.Errorf("probe: features need a train and a test split, found %v", keysOf(sets))
	}
	return sets, nil
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// addBaselines probes raw pixels and a randomly initialised model of the
// same config on the same images and splits, reusing either row from the
// root's baseline cache when an earlier run fitted it on the same inputs.
func addBaselines(ctx context.Context, rc *RunContext, rep *probe.Report, sets map[string]*probe.FeatureSet,
	extract func(dir, weights string) (string, error), pc ProbeConfig, opts probe.ProbeOptions, mc model.Config) error {
	keys := splitKeysHash(sets)
	row, err := cachedBaseline(ctx, rc, rawPixelsID(rc, pc, opts, keys), func() (probe.Row, error) {
		return rawPixelBaseline(ctx, rc, sets, pc, opts)
	})
	if err != nil {
		return err
	}
	rep.AddBaseline(row)
	row, err = cachedBaseline(ctx, rc, randomInitID(rc, pc, opts, mc, keys), func() (probe.Row, error) {
		return randomInitBaseline(ctx, rc, extract, pc, opts)
	})
	if err != nil {
		return err
	}
	rep.AddBaseline(row)
	return nil
}

// rawPixelBaseline probes the original images, scaled to [0, 1] and
// flattened, split exactly as the tokens were. A Beam pipeline writes their
// features (the workers read the Image shards; the driver lists the keys).
func rawPixelBaseline(ctx context.Context, rc *RunContext, sets map[string]*probe.FeatureSet, pc ProbeConfig,
	opts probe.ProbeOptions) (probe.Row, error) {
	var keys []pipelines.KeySplit
	for split, set := range sets {
		ks, _ := set.Keys()
		for _, k := range ks {
			keys = append(keys, pipelines.KeySplit{Key: k, Split: split})
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Key < keys[j].Key })
	dir := storage.Join(rc.Dir, "features-raw")
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
	pipelines.RawPixels(s, imagesFile, keysFile, dir)
	if _, err := runPipeline(ctx, rc, p); err != nil {
		return probe.Row{}, err
	}
	raw, err := readFeatureSets(ctx, dir, 0)
	if err != nil {
		return probe.Row{}, err
	}
	rawSplits, err := probe.AssembleSplits(raw["train"], raw["val"], raw["test"], 0.1, pc.Seed)
	if err != nil {
		return probe.Row{}, fmt.Errorf("probe: raw-pixel baseline: %w", err)
	}
	return probe.ProbeBaseline(probe.RawPixels, rawSplits[0], pc.L2, opts)
}

// randomInitBaseline runs the same pipeline with untrained weights and
// returns its best layer's row.
func randomInitBaseline(ctx context.Context, rc *RunContext, extract func(dir, weights string) (string, error),
	pc ProbeConfig, opts probe.ProbeOptions) (probe.Row, error) {
	dir := storage.Join(rc.Dir, "features-random-init")
	if _, err := extract(dir, ""); err != nil {
		return probe.Row{}, err
	}
	rsets, err := readFeatureSets(ctx, dir, pc.MaxTrain)
	if err != nil {
		return probe.Row{}, err
	}
	rsplits, err := probe.AssembleSplits(rsets["train"], rsets["val"], rsets["test"], 0.1, pc.Seed)
	if err != nil {
		return probe.Row{}, err
	}
	rrep, err := probe.ProbeLayers(rsplits, pc.L2, opts)
	if err != nil {
		return probe.Row{}, err
	}
	row, ok := probe.BaselineFromBest(probe.RandomInitPrefix, rrep)
	if !ok {
		return probe.Row{}, fmt.Errorf("probe: random-init baseline: no layer was probed")
	}
	return row, nil
}

// probeRecords is how many records the feature pipeline reads from the
// quantize output: its progress bar's total.
func probeRecords(qm *Manifest, maxPerShard, maxTrainPerShard int) int64 {
	var n int64
	for _, f := range qm.Files {
		lim := int64(maxPerShard)
		if f.Split == "train" && maxTrainPerShard > 0 && (lim == 0 || int64(maxTrainPerShard) < lim) {
			lim = int64(maxTrainPerShard)
		}
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

// fitsBar starts the progress bar of the probe's fits (a λ grid per layer
// and per baseline row) and has opts report to it.
func fitsBar(rc *RunContext, opts *probe.ProbeOptions, layers int) *progress.Bar {
	pc := rc.Config.Probe
	n := layers + 1
	if *pc.Baselines {
		n = 2*n + 1
	}
	bar := progress.Start("probe: fits", 0, int64(n*len(pc.L2)), rc.Log)
	opts.Fit.Progress = func(k int) { bar.Add(int64(k)) }
	return bar
}
