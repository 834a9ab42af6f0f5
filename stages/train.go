package stages

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/loader"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func init() { Register(trainStage{}) }

// Files of the train stage's folder.
const (
	MetricsFile   = "metrics.jsonl"
	LossPlotFile  = "loss.png"
	CheckpointDir = "checkpoints"
	LatestFile    = model.LatestFile // names the newest complete checkpoint folder
	WeightsFile   = model.WeightsFile
	OptimFile     = model.OptimFile
	StateFile     = model.StateFile
)

// trainStage trains the transformer on the quantize stage's tokens, on all
// cores of one machine. It resumes from its newest checkpoint.
type trainStage struct{}

func (trainStage) Name() string                  { return "train" }
func (trainStage) Version() int                  { return 1 }
func (trainStage) Upstream(cfg *Config) []string { return []string{cfg.TokensStage()} }
func (trainStage) Params(cfg *Config) any {
	return cfg.Train
}
func (trainStage) Resumable() bool { return true }

// TrainParams configures the train stage: the model and its optimisation.
type TrainParams struct {
	// Model names a preset (nano, micro, S, M, L, XL); Layers, D and Heads
	// override its values. The context is the token grid's h×w, the
	// vocabulary the palette's size.
	Model  string `yaml:"model" json:"model"`
	Layers int    `yaml:"layers" json:"layers,omitempty"`
	D      int    `yaml:"d" json:"d,omitempty"`
	Heads  int    `yaml:"heads" json:"heads,omitempty"`
	// Objective is "ar" (autoregressive, default) or "bert".
	Objective string `yaml:"objective" json:"objective"`
	// BERTMaskProb is the masking probability of the BERT objective (0.15).
	BERTMaskProb float64 `yaml:"bert_mask_prob" json:"bert_mask_prob,omitempty"`
	// Batch is the micro-batch in sequences; Accum micro-batches make a step.
	Batch int `yaml:"batch" json:"batch"`
	Accum int `yaml:"accum" json:"accum"`
	// Steps is the number of optimiser steps; the learning rate warms up
	// linearly over WarmupSteps to LR, then decays with a cosine to 0.
	Steps       int     `yaml:"steps" json:"steps"`
	WarmupSteps int     `yaml:"warmup_steps" json:"warmup_steps"`
	LR          float64 `yaml:"lr" json:"lr"`
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay,omitempty"`
	// Clip is the global gradient-norm clip (0: none).
	Clip float64 `yaml:"clip" json:"clip,omitempty"`
	// EvalEvery steps the validation loss is computed on the first
	// EvalRecords records of the val split (test when there is no val).
	EvalEvery   int `yaml:"eval_every" json:"eval_every"`
	EvalRecords int `yaml:"eval_records" json:"eval_records"`
	// CheckpointEvery steps (and on interruption) a checkpoint is written;
	// the last KeepCheckpoints are kept.
	CheckpointEvery int `yaml:"checkpoint_every" json:"checkpoint_every"`
	KeepCheckpoints int `yaml:"keep_checkpoints" json:"keep_checkpoints"`
	// HFlip is the probability that a training sequence is mirrored left
	// to right (its token grid's columns reversed): horizontal-flip
	// augmentation. It is exact for palette tokens, which quantize each
	// pixel on its own; VQ-VAE codes are not flip-equivariant.
	HFlip float64 `yaml:"hflip" json:"hflip,omitempty"`
	// InitFrom starts training from another run's weights instead of a
	// random initialisation, with a fresh optimiser and schedule (continued
	// pretraining). It names a .safetensors file, a checkpoint folder
	// holding model.safetensors, or a train stage folder, whose newest
	// checkpoint is used; a relative path is taken from the root (so
	// "train/<key>" names another run under the same root). The model
	// config must match. The path is part of the stage key; the weights'
	// sha256 is recorded in the manifest.
	InitFrom string `yaml:"init_from" json:"init_from,omitempty"`
	// Seed of initialisation, data order, flips and BERT masks.
	Seed uint64 `yaml:"seed" json:"seed"`
	// ShuffleBuffer is the number of shards whose records are shuffled
	// together (default 2).
	ShuffleBuffer int `yaml:"shuffle_buffer" json:"shuffle_buffer"`
	// Threads for the kernels (default: all cores). Results are bit-for-bit
	// reproducible for a given thread count.
	Threads int `yaml:"threads" json:"threads"`
	// Precision of the transformer blocks' matrix products: fp32 (default)
	// or bf16, bf16 operands with fp32 accumulation, fp32 master weights,
	// optimiser and loss (model.BF16). bf16 needs a CPU with AVX512_BF16
	// and is refused at load without it; auto is bf16 where the CPU has
	// it and fp32 elsewhere, resolved at load. Part of the stage key (the
	// resolved value); fp32 is left out of the key, so fp32 runs keep the
	// keys they had.
	Precision string `yaml:"precision" json:"precision,omitempty"`
}

func (t *TrainParams) fillDefaults() {
	if t.Model == "" {
		t.Model = "nano"
	}
	if t.Objective == "" {
		t.Objective = "ar"
	}
	if t.BERTMaskProb == 0 {
		t.BERTMaskProb = model.BERTMaskProb
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&t.Batch, 8)
	def(&t.Accum, 1)
	def(&t.Steps, 1000)
	def(&t.WarmupSteps, max(1, t.Steps/20))
	def(&t.EvalEvery, 100)
	def(&t.EvalRecords, 256)
	def(&t.CheckpointEvery, 200)
	def(&t.KeepCheckpoints, 2)
	def(&t.ShuffleBuffer, 2)
	if t.LR == 0 {
		t.LR = 3e-3
	}
	t.Precision = keyPrecision(t.Precision)
}

// keyPrecision is a precision as stage keys hold it: fp32, the default,
// as "" (left out), so that writing it out keeps the key; "auto" resolved
// here, at load, to bf16 where this CPU runs it (AVX512_BF16) and fp32
// elsewhere, so the key names the arithmetic the stage actually used.
func keyPrecision(s string) string {
	if s == "auto" {
		s = "fp32"
		if model.BF16.Check() == nil {
			s = "bf16"
		}
	}
	if s == "fp32" {
		return ""
	}
	return s
}

// checkPrecision checks the precision key (train.precision, …): fp32 or
// bf16, and bf16 only where the CPU runs it (naming the missing flag).
func checkPrecision(key, s string) (model.Precision, error) {
	p, err := model.ParsePrecision(s)
	if err != nil {
		return p, fmt.Errorf("%s is %q: want fp32, bf16 or auto", key, s)
	}
	if err := p.Check(); err != nil {
		return p, fmt.Errorf("%s is bf16 but %w, or auto (bf16 only where the CPU has it)", key, err)
	}
	return p, nil
}

// Prec is the train section's precision (checked at load).
func (t TrainParams) Prec() model.Precision {
	p, _ := model.ParsePrecision(t.Precision)
	return p
}

// check validates the train section, the model's shape included (the
// context and vocabulary come later, from the tokens).
func (t TrainParams) check() error {
	if t.Objective != "ar" && t.Objective != "bert" {
		return fmt.Errorf("train.objective must be ar or bert, got %q", t.Objective)
	}
	if t.WarmupSteps > t.Steps {
		return fmt.Errorf("train.warmup_steps is %d: at most train.steps (%d)", t.WarmupSteps, t.Steps)
	}
	if _, err := checkPrecision("train.precision", t.Precision); err != nil {
		return err
	}
	_, err := t.modelShape()
	return err
}

// modelShape resolves train.model and its overrides, checking each in
// YAML terms; Seq and Vocab are left 1 for the tokens to fill.
func (t TrainParams) modelShape() (model.Config, error) {
	mc, ok := model.Presets[t.Model]
	if !ok {
		return mc, fmt.Errorf("train.model is %q: use one of %s%s", t.Model, strings.Join(presetNames(), ", "), didYouMean(t.Model, presetNames()))
	}
	for _, o := range []struct {
		key string
		v   int
		dst *int
	}{{"train.layers", t.Layers, &mc.Layers}, {"train.d", t.D, &mc.D}, {"train.heads", t.Heads, &mc.Heads}} {
		if o.v < 0 {
			return mc, fmt.Errorf("%s is %d: give a positive value, or leave it out for the preset's", o.key, o.v)
		}
		if o.v > 0 {
			*o.dst = o.v
		}
	}
	if mc.D%mc.Heads != 0 {
		return mc, fmt.Errorf("train.heads %d does not divide train.d %d (train.model %s)", mc.Heads, mc.D, t.Model)
	}
	mc.Seq, mc.Vocab = 1, 1
	if err := mc.Validate(); err != nil {
		return mc, fmt.Errorf("train.model %s with train.layers/d/heads: %w", t.Model, err)
	}
	return mc, nil
}

func presetNames() []string {
	names := make([]string, 0, len(model.Presets))
	for n := range model.Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TrainState is what a checkpoint holds beside the weights and optimiser
// moments: enough to continue bit-for-bit.
type TrainState struct {
	Step     int             `json:"step"`
	Model    model.Config    `json:"model"`
	Position loader.Position `json:"data_position"`
	RNG      []byte          `json:"rng"` // flip and BERT mask generator (PCG state)
	Threads  int             `json:"threads"`
	Time     time.Time       `json:"time"`
	// InitSHA256 is the sha256 of the weights train.init_from named, when
	// the run started from them.
	InitSHA256 string `json:"init_sha256,omitempty"`
}

// Metric is one line of metrics.jsonl.
type Metric struct {
	Step     int      `json:"step"`
	Epoch    int      `json:"epoch"`
	Loss     float64  `json:"loss"`
	ValLoss  *float64 `json:"val_loss,omitempty"`
	LR       float64  `json:"lr"`
	GradNorm float64  `json:"grad_norm"`
	Tokens   int64    `json:"tokens"`
	TokensPS float64  `json:"tokens_per_s"` // of the process that ran the step
	ElapsedS float64  `json:"elapsed_s"`    // wall time since step 0, across resumes
}

// TrainOutput is what the train stage records beside its checkpoints
// (manifest meta): the model it trained, with which objective, and where
// its final weights are.
type TrainOutput struct {
	Model      model.Config `json:"model"`
	Objective  string       `json:"objective"`
	Steps      int          `json:"steps"`
	Checkpoint string       `json:"checkpoint"` // final checkpoint folder, relative to the stage folder
	// Weights is the final weights' full path (not stored).
	Weights string `json:"-"`
}

// ReadTrainOutput reads a train stage's typed output, checking that its
// final checkpoint lies inside the stage folder.
func ReadTrainOutput(m *Manifest) (TrainOutput, error) {
	var out TrainOutput
	if err := decodeMeta(m, "train", &out); err != nil {
		return out, err
	}
	dir, err := m.Resolve("meta.checkpoint", out.Checkpoint)
	if err != nil {
		return out, err
	}
	if out.Objective == "" {
		out.Objective = "ar"
	}
	out.Weights = storage.Join(dir, WeightsFile)
	return out, nil
}

// LoadTrained loads a train stage's final weights: the one loader of a
// trained model (the probe and sample stages, sampling from a run folder,
// export-hf).
func LoadTrained(ctx context.Context, m *Manifest) (*model.Params, TrainOutput, error) {
	out, err := ReadTrainOutput(m)
	if err != nil {
		return nil, out, err
	}
	b, err := storage.ReadFile(ctx, out.Weights)
	if err != nil {
		return nil, out, fmt.Errorf("the train stage's final checkpoint: %w", err)
	}
	p, _, err := model.LoadCheckpoint(bytes.NewReader(b))
	if err != nil {
		return nil, out, fmt.Errorf("%s: %w", out.Weights, err)
	}
	return p, out, nil
}

// ModelConfig resolves the train config against the token grid and vocab.
func ModelConfig(tc TrainParams, seq, vocab int) (model.Config, error) {
	mc, err := tc.modelShape()
	if err != nil {
		return mc, err
	}
	mc.Seq, mc.Vocab = seq, vocab
	return mc, mc.Validate()
}

func (trainStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	tc := rc.Config.Train
	qm := rc.Inputs[rc.Config.TokensStage()]
	if tc.Threads > 0 {
		kernels.SetThreads(tc.Threads)
	}
	tr, err := newTrainer(ctx, rc, qm)
	if err != nil {
		return nil, err
	}
	if err := tr.loop(ctx); err != nil {
		return nil, err
	}
	return tr.output(ctx)
}

func (tr *trainer) output(ctx context.Context) (*Output, error) {
	if err := tr.writeMetrics(ctx); err != nil {
		return nil, err
	}
	png, err := LossPlot(tr.metrics)
	if err != nil {
		return nil, err
	}
	if err := storage.WriteFile(ctx, storage.Join(tr.rc.Dir, LossPlotFile), png); err != nil {
		return nil, err
	}
	final := storage.Join(CheckpointDir, ckptName(tr.step))
	meta := map[string]any{
		"model": tr.m.Config, "params": tr.m.Config.NumParams(), "steps": tr.step, "tokens": tr.tokens,
		"checkpoint": final, "objective": tr.tc.Objective,
	}
	if tr.initSHA != "" {
		meta["init_from"], meta["init_sha256"] = tr.tc.InitFrom, tr.initSHA
	}
	if n := len(tr.metrics); n > 0 {
		meta["final_loss"] = tr.metrics[n-1].Loss
		meta["minutes"] = tr.metrics[n-1].ElapsedS / 60
		for i := n - 1; i >= 0; i-- {
			if v := tr.metrics[i].ValLoss; v != nil {
				meta["final_val_loss"] = *v
				break
			}
		}
	}
	out := &Output{Meta: meta}
	for _, f := range []string{storage.Join(final, WeightsFile), storage.Join(final, OptimFile), storage.Join(final, StateFile), MetricsFile, LossPlotFile} {
		n, err := storage.Size(ctx, storage.Join(tr.rc.Dir, f))
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, FileInfo{Name: f, Bytes: n})
	}
	return out, nil
}
