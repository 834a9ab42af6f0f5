package stages

import (
	"context"
	"fmt"
	"strings"

	"gonum.org/v1/plot/plotter"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func init() { Register(finetuneStage{}) }

// Files of the finetune stage's folder.
const (
	// BestFile holds the weights and head of the step with the best val
	// accuracy so far: what early stopping keeps and the test split scores.
	BestFile         = "best.safetensors"
	FinetunePlotFile = "finetune.png"
	FinetuneReport   = "finetune.md"
	HeadOptimFile    = "head_optim.safetensors"
)

// finetuneStage fine-tunes a trained model for classification (the paper's
// §3.4): a linear head on the mean-pooled final normalised state, trained
// with the generative loss plus the classification loss, Adam at a constant
// rate after warm-up, the paper's CIFAR augmentation on token grids, early
// stopping on val accuracy; it reports test accuracy with the best val
// weights. With finetune.init: random it is the supervised baseline: the
// same architecture and augmentation from a random initialisation.
type finetuneStage struct{}

func (finetuneStage) Name() string    { return "finetune" }
func (finetuneStage) Version() int    { return 1 }
func (finetuneStage) Resumable() bool { return true }
func (finetuneStage) Upstream(cfg *Config) []string {
	if cfg.Finetune.Init == FinetuneRandom {
		return []string{cfg.TokensStage()}
	}
	return []string{cfg.TokensStage(), "train"}
}

// Params is the finetune section plus the model shape it fine-tunes (which
// a random initialisation takes from the train section, as the train stage
// does, without depending on its run).
func (finetuneStage) Params(cfg *Config) any {
	p := struct {
		FinetuneParams
		Model *TrainParams `json:"model,omitempty"`
	}{FinetuneParams: cfg.Finetune}
	if cfg.Finetune.Init == FinetuneRandom {
		t := cfg.Train
		p.Model = &TrainParams{Model: t.Model, Layers: t.Layers, D: t.D, Heads: t.Heads, Objective: t.Objective, BERTMaskProb: t.BERTMaskProb}
	}
	return p
}

// The values of finetune.init.
const (
	FinetunePretrained = "pretrained"
	FinetuneRandom     = "random"
)

// FinetuneParams configures the finetune stage.
type FinetuneParams struct {
	// Init is "pretrained" (the train stage's final weights) or "random"
	// (the supervised baseline: train.model's shape, initialised by Seed).
	Init string `yaml:"init" json:"init"`
	// GenWeight scales the generative loss in the joint objective
	// L = gen_weight·L_gen + L_cls (1, the paper's; 0: classification only).
	GenWeight *float64 `yaml:"gen_weight" json:"gen_weight"`
	// Batch of training sequences; Steps caps the optimiser steps and
	// MaxMinutes the wall time (0: no cap), counted across resumes.
	Batch      int     `yaml:"batch" json:"batch"`
	Steps      int     `yaml:"steps" json:"steps"`
	MaxMinutes float64 `yaml:"max_minutes" json:"max_minutes,omitempty"`
	// LR is Adam's rate, reached by a linear warm-up over WarmupSteps and
	// then constant (the paper fine-tunes without cosine decay).
	LR          float64 `yaml:"lr" json:"lr"`
	WarmupSteps int     `yaml:"warmup_steps" json:"warmup_steps"`
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay,omitempty"`
	Clip        float64 `yaml:"clip" json:"clip"`
	// EvalEvery steps the val accuracy is measured on the first
	// EvalRecords val records (0: all); after Patience evaluations without
	// a new best (0: never) training stops early.
	EvalEvery   int `yaml:"eval_every" json:"eval_every"`
	EvalRecords int `yaml:"eval_records" json:"eval_records"`
	Patience    int `yaml:"patience" json:"patience"`
	// Pad is the reflection padding, in tokens, before the random crop
	// back to the grid (default w/8: the paper's 4 pixels of a 32-pixel
	// image; 0: no crop); HFlip the probability of a horizontal flip
	// (default 0.5). Both are exact on palette token grids. On VQ-VAE
	// code grids a crop is a translation by whole codes (f pixels each)
	// and only approximately the codes of the translated image; codes are
	// not flip-equivariant, so tokens: vqvae refuses hflip.
	Pad   *int     `yaml:"pad" json:"pad"`
	HFlip *float64 `yaml:"hflip" json:"hflip"`
	// CheckpointEvery steps (and on interruption) a checkpoint is written;
	// the last KeepCheckpoints are kept.
	CheckpointEvery int    `yaml:"checkpoint_every" json:"checkpoint_every"`
	KeepCheckpoints int    `yaml:"keep_checkpoints" json:"keep_checkpoints"`
	Seed            uint64 `yaml:"seed" json:"seed"`
	ShuffleBuffer   int    `yaml:"shuffle_buffer" json:"shuffle_buffer"`
	Threads         int    `yaml:"threads" json:"threads"`
	// Precision of the model's matrix products while fine-tuning, as
	// train.precision: fp32 (default, left out of the stage key), bf16
	// (AVX512_BF16 CPUs) or auto (bf16 where the CPU has it, resolved at
	// load). The head and the evaluations stay fp32.
	Precision string `yaml:"precision" json:"precision,omitempty"`
}

// Prec is the finetune section's precision (checked at load).
func (f FinetuneParams) Prec() model.Precision {
	p, _ := model.ParsePrecision(f.Precision)
	return p
}

func (f *FinetuneParams) fillDefaults(tokens string) {
	if f.Init == "" {
		f.Init = FinetunePretrained
	}
	if f.GenWeight == nil {
		f.GenWeight = ptr(1.0)
	}
	if f.HFlip == nil {
		f.HFlip = ptr(0.5)
		if tokens == TokensVQVAE {
			f.HFlip = ptr(0.0)
		}
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	f.Precision = keyPrecision(f.Precision)
	def(&f.Batch, 32)
	def(&f.Steps, 2000)
	def(&f.EvalEvery, 200)
	def(&f.EvalRecords, 2000)
	def(&f.CheckpointEvery, 200)
	def(&f.KeepCheckpoints, 2)
	def(&f.ShuffleBuffer, 2)
	if f.WarmupSteps == 0 {
		f.WarmupSteps = max(1, f.Steps/50)
	}
	if f.LR == 0 {
		f.LR = 3e-4
	}
	if f.Clip == 0 {
		f.Clip = 1
	}
}

func ptr[T any](v T) *T { return &v }

func (f FinetuneParams) check(tokens string) error {
	if f.Init != FinetunePretrained && f.Init != FinetuneRandom {
		return fmt.Errorf("finetune.init is %q: want pretrained (the train stage's weights) or random (the supervised baseline)", f.Init)
	}
	if f.Batch < 1 || f.Steps < 1 || f.WarmupSteps < 0 || f.WarmupSteps > f.Steps || f.LR <= 0 || f.EvalEvery < 1 {
		return fmt.Errorf("finetune: batch, steps and eval_every must be positive, 0 <= warmup_steps <= steps and lr > 0 (got batch %d steps %d warmup %d lr %v eval_every %d)",
			f.Batch, f.Steps, f.WarmupSteps, f.LR, f.EvalEvery)
	}
	if *f.GenWeight < 0 || f.MaxMinutes < 0 || f.WeightDecay < 0 || f.Clip < 0 || f.EvalRecords < 0 || f.Patience < 0 || f.Threads < 0 {
		return fmt.Errorf("finetune: gen_weight, max_minutes, weight_decay, clip, eval_records, patience and threads must not be negative")
	}
	if _, err := checkPrecision("finetune.precision", f.Precision); err != nil {
		return err
	}
	if f.Pad != nil && *f.Pad < 0 {
		return fmt.Errorf("finetune.pad is %d tokens: give 0 (no crop) or more", *f.Pad)
	}
	if h := *f.HFlip; h < 0 || h > 1 {
		return fmt.Errorf("finetune.hflip is a probability in [0, 1], got %v", h)
	}
	if tokens == TokensVQVAE && *f.HFlip > 0 {
		return fmt.Errorf("finetune.hflip = %v with tokens: vqvae: flipping a grid of VQ codes is not the code grid of the flipped image; set finetune.hflip: 0", *f.HFlip)
	}
	if f.KeepCheckpoints < 1 || f.CheckpointEvery < 1 {
		return fmt.Errorf("finetune.checkpoint_every and keep_checkpoints must be at least 1")
	}
	return nil
}

// FinetuneOutput is what the finetune stage records: the accuracies of the
// weights with the best val accuracy.
type FinetuneOutput struct {
	Init     string  `json:"init"`
	TestAcc  float64 `json:"test_acc"`
	ValAcc   float64 `json:"val_acc"`
	BestStep int     `json:"best_step"`
	Steps    int     `json:"steps"`
	Stopped  string  `json:"stopped"` // steps, patience or time
	Minutes  float64 `json:"minutes"`
}

// ReadFinetuneOutput reads a finetune stage's typed output, checking that
// it describes a run: accuracies in [0, 1], the best step among the steps.
func ReadFinetuneOutput(m *Manifest) (FinetuneOutput, error) {
	var out FinetuneOutput
	if err := decodeMeta(m, "finetune", &out); err != nil {
		return out, err
	}
	if out.TestAcc < 0 || out.TestAcc > 1 || out.ValAcc < 0 || out.ValAcc > 1 || out.BestStep < 0 || out.BestStep > out.Steps {
		return out, fmt.Errorf("manifest %s: meta test_acc %v, val_acc %v, best_step %d of %d steps do not describe a fine-tuning run; the manifest is damaged or forged",
			storage.Join(m.Dir, ManifestName), out.TestAcc, out.ValAcc, out.BestStep, out.Steps)
	}
	return out, nil
}

func (finetuneStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	fc := rc.Config.Finetune
	if fc.Threads > 0 {
		kernels.SetThreads(fc.Threads)
	}
	ft, err := newFinetuner(ctx, rc)
	if err != nil {
		return nil, err
	}
	if err := ft.loop(ctx); err != nil {
		return nil, err
	}
	res, err := ft.test(ctx)
	if err != nil {
		return nil, err
	}
	return ft.output(ctx, res)
}

// output writes the metrics, curve and report and describes the folder.
func (ft *finetuner) output(ctx context.Context, res FinetuneOutput) (*Output, error) {
	dir := ft.rc.Dir
	if err := ft.writeProgress(ctx); err != nil {
		return nil, err
	}
	if err := storage.WriteFile(ctx, storage.Join(dir, FinetuneReport), []byte(ft.report(ctx, res))); err != nil {
		return nil, err
	}
	meta := map[string]any{"init": res.Init, "test_acc": res.TestAcc, "val_acc": res.ValAcc, "best_step": res.BestStep,
		"steps": res.Steps, "stopped": res.Stopped, "minutes": res.Minutes, "model": ft.m.Config, "classes": ft.head.Classes}
	out := &Output{Meta: meta}
	for _, f := range []string{BestFile, MetricsFile, FinetunePlotFile, FinetuneReport} {
		n, err := storage.Size(ctx, storage.Join(dir, f))
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, FileInfo{Name: f, Bytes: n})
	}
	return out, nil
}

// finetunePlot draws the train accuracy (mean over each window of steps)
// and the val accuracy against the step.
func finetunePlot(ms []FinetuneMetric) ([]byte, error) {
	var train, val plotter.XYs
	for _, m := range ms {
		train = append(train, plotter.XY{X: float64(m.Step), Y: 100 * m.TrainAcc})
		val = append(val, plotter.XY{X: float64(m.Step), Y: 100 * m.ValAcc})
	}
	b, err := trainEvalPlot("iGPT fine-tuning", "accuracy (%)", "train (augmented)", train, "val", val, legendBottom)
	if err != nil {
		return nil, fmt.Errorf("finetune plot: %w", err)
	}
	return b, nil
}

// report is finetune.md: the result, and the probe's best layer beside it
// when the config's probe stage is done.
func (ft *finetuner) report(ctx context.Context, res FinetuneOutput) string {
	var b strings.Builder
	fc := ft.fc
	fmt.Fprintf(&b, "# Fine-tuning: %v (%s), init %s\n\n", ft.m.Config, ft.obj, res.Init)
	fmt.Fprintf(&b, "Joint loss %g·L_gen + L_cls, Adam lr %g (warm-up %d steps, then constant), batch %d, clip %g; augmentation: reflection pad %d tokens + random crop, horizontal flip p = %g; early stopping on val accuracy (%d records, patience %d).\n\n",
		*fc.GenWeight, fc.LR, fc.WarmupSteps, fc.Batch, fc.Clip, ft.pad, *fc.HFlip, len(ft.val.labels), fc.Patience)
	b.WriteString("| model | test acc | val acc | best step | steps | stopped by | minutes |\n|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| fine-tuned (%s) | %.2f%% | %.2f%% | %d | %d | %s | %.1f |\n", res.Init, 100*res.TestAcc, 100*res.ValAcc, res.BestStep, res.Steps, res.Stopped, res.Minutes)
	if plan, err := NewPlan(ctx, ft.rc.Config); err == nil {
		if st, err := plan.Step("probe"); err == nil && st.Done() && res.Init == FinetunePretrained {
			if l, ok := st.Manifest.Meta["best_layer"]; ok {
				fmt.Fprintf(&b, "| linear probe, layer %v (probe/%s) | %.2f%% | | | | | |\n", l, st.Key, 100*toFloat(st.Manifest.Meta["best_test_acc"]))
			}
		}
	}
	return b.String()
}

func toFloat(v any) float64 {
	f, _ := v.(float64)
	return f
}
