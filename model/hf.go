package model

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Hugging Face ImageGPT interchange. transformers' ImageGPTForCausalImageModeling
// reads a directory with config.json (ImageGPTConfig) and model.safetensors.
// Its layout is ours plus biases that the TF original never had (c_attn,
// attn.c_proj, mlp.c_fc, mlp.c_proj: zero on export, and required to be
// zero on import); its ImageGPTLayerNorm has a weight only, its lm_head is
// [vocab_size-1, d] without bias, and vocab_size counts the start token
// (V+1, whose embedding is row V of wte).

// HFConfig is the subset of transformers' ImageGPTConfig that config.json
// carries (all its keys, with the values this model implies).
type HFConfig struct {
	VocabSize                  int      `json:"vocab_size"`
	NPositions                 int      `json:"n_positions"`
	NEmbd                      int      `json:"n_embd"`
	NLayer                     int      `json:"n_layer"`
	NHead                      int      `json:"n_head"`
	NInner                     *int     `json:"n_inner"`
	ActivationFunction         string   `json:"activation_function"`
	ResidPdrop                 float64  `json:"resid_pdrop"`
	EmbdPdrop                  float64  `json:"embd_pdrop"`
	AttnPdrop                  float64  `json:"attn_pdrop"`
	LayerNormEpsilon           float64  `json:"layer_norm_epsilon"`
	InitializerRange           float64  `json:"initializer_range"`
	ScaleAttnWeights           bool     `json:"scale_attn_weights"`
	UseCache                   bool     `json:"use_cache"`
	TieWordEmbeddings          bool     `json:"tie_word_embeddings"`
	ScaleAttnByInverseLayerIdx bool     `json:"scale_attn_by_inverse_layer_idx"`
	ReorderAndUpcastAttn       bool     `json:"reorder_and_upcast_attn"`
	ModelType                  string   `json:"model_type"`
	Architectures              []string `json:"architectures"`
	TorchDtype                 string   `json:"torch_dtype,omitempty"`
}

// HFConfigOf returns the config.json contents for cfg.
func HFConfigOf(cfg Config) HFConfig {
	return HFConfig{
		VocabSize: cfg.Vocab + 1, NPositions: cfg.Seq, NEmbd: cfg.D, NLayer: cfg.Layers, NHead: cfg.Heads,
		ActivationFunction: "quick_gelu", LayerNormEpsilon: 1e-5, InitializerRange: 0.02,
		ScaleAttnWeights: true, UseCache: true, ModelType: "imagegpt",
		Architectures: []string{"ImageGPTForCausalImageModeling"}, TorchDtype: "float32",
	}
}

// Config checks that the HF configuration describes a model this package
// computes exactly and returns it.
func (h HFConfig) Config() (Config, error) {
	c := Config{Layers: h.NLayer, D: h.NEmbd, Heads: h.NHead, Seq: h.NPositions, Vocab: h.VocabSize - 1}
	var bad []string
	if h.ModelType != "" && h.ModelType != "imagegpt" {
		bad = append(bad, fmt.Sprintf("model_type %q, want imagegpt", h.ModelType))
	}
	if h.NInner != nil && *h.NInner != 4*h.NEmbd {
		bad = append(bad, fmt.Sprintf("n_inner %d, want null or 4·n_embd = %d", *h.NInner, 4*h.NEmbd))
	}
	if h.ActivationFunction != "quick_gelu" {
		bad = append(bad, fmt.Sprintf("activation_function %q, want quick_gelu", h.ActivationFunction))
	}
	if h.LayerNormEpsilon != 1e-5 {
		bad = append(bad, fmt.Sprintf("layer_norm_epsilon %g, want 1e-5", h.LayerNormEpsilon))
	}
	if !h.ScaleAttnWeights || h.ScaleAttnByInverseLayerIdx {
		bad = append(bad, "attention scaling must be 1/sqrt(head dim) (scale_attn_weights true, scale_attn_by_inverse_layer_idx false)")
	}
	if h.TieWordEmbeddings {
		bad = append(bad, "tie_word_embeddings must be false")
	}
	if len(bad) > 0 {
		return Config{}, fmt.Errorf("model: unsupported ImageGPT config: %s", strings.Join(bad, "; "))
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// hfBiases lists the bias tensors of HF's layout for layer i with their
// lengths.
func hfBiases(i, d int) []WTensor {
	pre := fmt.Sprintf("transformer.h.%d.", i)
	return []WTensor{
		{Name: pre + "attn.c_attn.bias", Shape: []int{3 * d}},
		{Name: pre + "attn.c_proj.bias", Shape: []int{d}},
		{Name: pre + "mlp.c_fc.bias", Shape: []int{4 * d}},
		{Name: pre + "mlp.c_proj.bias", Shape: []int{d}},
	}
}

// WriteHFConfig writes config.json for cfg.
func WriteHFConfig(w io.Writer, cfg Config) error {
	b, err := json.MarshalIndent(HFConfigOf(cfg), "", "  ")
	if err == nil {
		_, err = w.Write(append(b, '\n'))
	}
	if err != nil {
		return fmt.Errorf("model: write config.json: %w", err)
	}
	return nil
}

// WriteHFModel writes model.safetensors in the layout transformers'
// ImageGPTForCausalImageModeling loads: our tensors plus zero biases, with
// metadata format "pt" (which transformers requires).
func WriteHFModel(w io.Writer, p *Params) error {
	var ts []WTensor
	d := p.Config.D
	zeros := make([]float32, 4*d)
	bi := 0
	for _, t := range paramTensors(p, "") {
		ts = append(ts, t)
		if strings.HasSuffix(t.Name, ".mlp.c_proj.weight") { // last tensor of a block
			for _, b := range hfBiases(bi, d) {
				b.F32 = zeros[:b.Shape[0]]
				ts = append(ts, b)
			}
			bi++
		}
	}
	if err := WriteSafetensors(w, ts, configMeta(p.Config, nil)); err != nil {
		return fmt.Errorf("model: write HF model: %w", err)
	}
	return nil
}

// ReadHF reads an ImageGPT config.json and model.safetensors. Bias tensors
// must be all zero (they are not part of this model; a non-zero bias is an
// error naming it); the attention-mask buffers some checkpoints carry
// (attn.bias, attn.masked_bias) are ignored; any missing tensor is an error
// naming it. Floating-point dtypes F32, F64, F16 and BF16 are accepted.
func ReadHF(configJSON, model io.Reader) (*Params, error) {
	var hc HFConfig
	dec := json.NewDecoder(configJSON)
	if err := dec.Decode(&hc); err != nil {
		return nil, fmt.Errorf("model: read HF config.json: %w", err)
	}
	cfg, err := hc.Config()
	if err != nil {
		return nil, err
	}
	st, err := ReadSafetensors(model)
	if err != nil {
		return nil, fmt.Errorf("model: read HF model: %w", err)
	}
	p, unused, err := loadParams(st, cfg, "")
	if err != nil {
		return nil, fmt.Errorf("model: read HF model: %w", err)
	}
	for i := 0; i < cfg.Layers; i++ {
		pre := fmt.Sprintf("transformer.h.%d.", i)
		delete(unused, pre+"attn.bias")
		delete(unused, pre+"attn.masked_bias")
		for _, b := range hfBiases(i, cfg.D) {
			t, ok := st.Tensors[b.Name]
			if !ok {
				continue // absent biases are zero biases
			}
			delete(unused, b.Name)
			if !sameShape(t.Shape, b.Shape) {
				return nil, fmt.Errorf("model: read HF model: %s: shape %v, want %v", b.Name, t.Shape, b.Shape)
			}
			v, err := t.Float32s(nil)
			if err != nil {
				return nil, fmt.Errorf("model: read HF model: %s: %w", b.Name, err)
			}
			for j, x := range v {
				if x != 0 {
					return nil, fmt.Errorf("model: read HF model: %s[%d] = %g: this model has no biases and cannot represent a non-zero one", b.Name, j, x)
				}
			}
		}
	}
	if len(unused) > 0 {
		return nil, fmt.Errorf("model: read HF model: unexpected tensors: %s", strings.Join(sortedKeys(unused), ", "))
	}
	return p, nil
}
