package stages

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/pipelines"
	"github.com/igpt/igpt/vqvae"
)

func init() { Register(vqvaeEncodeStage{}) }

// VQVAEEncodeParams is the vqvae_encode: section: how images become code
// grids. Its val carving, shuffle and shard keys are quantize's.
type VQVAEEncodeParams struct {
	// Resize [h, w] scales every image (area filter) before encoding; the
	// VQ-VAE's factor must divide it. Empty: the images' own size.
	Resize []int `yaml:"resize" json:"resize,omitempty"`
	// Batch is the number of images per forward pass (default 32). It does
	// not change a code, so it is not part of the stage key.
	Batch       int            `yaml:"batch" json:"-"`
	ValFraction *float64       `yaml:"val_fraction" json:"val_fraction"`
	Seed        uint64         `yaml:"seed" json:"seed"`
	Shards      map[string]int `yaml:"shards" json:"shards,omitempty"`
}

func (v *VQVAEEncodeParams) fillDefaults() {
	if v.Batch == 0 {
		v.Batch = 32
	}
	if v.ValFraction == nil {
		f := 0.1
		v.ValFraction = &f
	}
}

func (v VQVAEEncodeParams) check() error {
	return checkTokenParams("vqvae_encode", v.Resize)
}

// vqvaeEncodeStage maps every image to the code grid of the trained
// VQ-VAE and writes Tokens shards per split, as quantize does with the
// palette.
type vqvaeEncodeStage struct{}

func (vqvaeEncodeStage) Name() string              { return "vqvae-encode" }
func (vqvaeEncodeStage) Version() int              { return 1 }
func (vqvaeEncodeStage) Upstream(*Config) []string { return []string{"download", "vqvae-train"} }
func (vqvaeEncodeStage) Params(cfg *Config) any {
	return cfg.VQVAEEncode
}

func (vqvaeEncodeStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	vc := rc.Config.VQVAEEncode
	dl, vm := rc.Inputs["download"], rc.Inputs["vqvae-train"]
	mc, weights, err := ReadVQVAE(vm)
	if err != nil {
		return nil, err
	}
	plan := planTokenShards(dl, *vc.ValFraction, vc.Shards)
	var resize [2]int
	if len(vc.Resize) == 2 {
		resize = [2]int{vc.Resize[0], vc.Resize[1]}
		if err := mc.CheckImage(resize[0], resize[1]); err != nil {
			return nil, fmt.Errorf("vqvae_encode.resize = %v: the VQ-VAE's factor %d must divide it", vc.Resize, mc.Factor)
		}
		if err := checkVQVAEMemory("vqvae-encode", fmt.Sprintf("vqvae_encode.batch %d at vqvae_encode.resize %v with the VQ-VAE's hidden %d and codes %d",
			vc.Batch, vc.Resize, mc.Hidden, mc.K), mc, vc.Batch, resize[0], resize[1], 0, false, "lower vqvae_encode.batch or vqvae_encode.resize"); err != nil {
			return nil, err
		}
	}
	rc.Log.Info("vqvae-encode: starting", "inputs", len(plan.inputs), "codes", mc.K, "factor", mc.Factor,
		"val_fraction", plan.valFraction, "shards", plan.shards)
	return runTokenStage(ctx, rc, vqvaeEncodeStage{}, plan, tokenState{ValFraction: plan.valFraction, Vocab: mc.K, Factor: mc.Factor}, func(s beam.Scope, list string) (beam.PCollection, error) {
		return pipelines.EncodeVQ(s, pipelines.EncodeVQConfig{Inputs: list, Model: weights, Vocab: mc.K, Resize: resize,
			Batch: vc.Batch, ValFraction: plan.valFraction, Seed: vc.Seed, Shards: plan.shards, Dir: rc.Dir})
	})
}

// Finish describes the Tokens shards the vqvae-encode job wrote, with the
// codes used and their perplexity per split.
func (vqvaeEncodeStage) Finish(ctx context.Context, rc *RunContext, state json.RawMessage) (*Output, error) {
	var ts tokenState
	if err := json.Unmarshal(state, &ts); err != nil {
		return nil, fmt.Errorf("vqvae-encode: finish step state: %w", err)
	}
	out, st, err := tokenOutput(ctx, rc, ts.ValFraction)
	if err != nil {
		return nil, err
	}
	used, perplexity := map[string]int{}, map[string]float64{}
	for split, h := range codeHistograms(st.Shards, ts.Vocab) {
		used[split], perplexity[split] = codeUsage(h)
	}
	out.Meta["vocab"], out.Meta["resize"], out.Meta["factor"] = ts.Vocab, rc.Config.VQVAEEncode.Resize, ts.Factor
	out.Meta["codes_used"], out.Meta["perplexity"] = used, perplexity
	return out, nil
}

// VQVAETrainOutput is what the vqvae-train stage records beside its
// checkpoints (manifest meta).
type VQVAETrainOutput struct {
	Model vqvae.Config `json:"model"`
	Steps int          `json:"steps"`
	// Checkpoint is the final weights file, relative to the stage folder.
	Checkpoint string   `json:"checkpoint"`
	EvalMSE255 *float64 `json:"eval_mse_255"`
	EvalPSNR   *float64 `json:"eval_psnr"`
}

// ReadVQVAE returns the model configuration and the weights' path that a
// vqvae-train output records.
func ReadVQVAE(m *Manifest) (vqvae.Config, string, error) {
	var out VQVAETrainOutput
	if err := decodeMeta(m, "vqvae-train", &out); err != nil {
		return out.Model, "", err
	}
	if out.Checkpoint == "" || out.Model.K < 1 || out.Model.Factor < 1 {
		return out.Model, "", fmt.Errorf("vqvae-train output %s: its manifest names no checkpoint or model (meta %v); rerun: igpt stage vqvae-train CONFIG --force", m.Dir, m.Meta)
	}
	weights, err := m.Resolve("meta.checkpoint", out.Checkpoint)
	if err != nil {
		return out.Model, "", err
	}
	return out.Model, weights, nil
}

// VQVAEEncodeOutput is what the vqvae-encode stage records: the token
// output's facts, and per split the codes used and their perplexity.
type VQVAEEncodeOutput struct {
	TokensOutput
	Factor     int                `json:"factor"`
	CodesUsed  map[string]int     `json:"codes_used"`
	Perplexity map[string]float64 `json:"perplexity"`
}

// ReadVQVAEEncodeOutput reads a vqvae-encode stage's typed output.
func ReadVQVAEEncodeOutput(m *Manifest) (VQVAEEncodeOutput, error) {
	var out VQVAEEncodeOutput
	return out, decodeMeta(m, "vqvae-encode", &out)
}

// codeHistograms sums the shards' token histograms per split.
func codeHistograms(shards []pipelines.ShardStats, vocab int) map[string][]int64 {
	out := map[string][]int64{}
	for _, s := range shards {
		h := out[s.Split]
		if h == nil {
			h = make([]int64, vocab)
			out[s.Split] = h
		}
		for i, c := range s.Codes {
			if i < vocab {
				h[i] += c
			}
		}
	}
	return out
}

// codeUsage returns how many codes occur and the perplexity exp(H) of
// their distribution (K when all are equally used, 1 for a single code).
func codeUsage(h []int64) (int, float64) {
	var total float64
	used := 0
	for _, c := range h {
		total += float64(c)
		if c > 0 {
			used++
		}
	}
	if total == 0 {
		return 0, 0
	}
	ent := 0.0
	for _, c := range h {
		if c > 0 {
			p := float64(c) / total
			ent -= p * math.Log(p)
		}
	}
	return used, math.Exp(ent)
}
