package vqvae

import (
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/model"
	"gorgonia.org/tensor"
)

// Checkpoints are safetensors files (model's reader and writer): every
// Param under its name ("encoder.down.0.weight" [4,4,3,64], …), the
// codebook and its EMA state under "quantizer.codebook" [K,D],
// "quantizer.ema_count" [K], "quantizer.ema_sum" [K,D] and
// "quantizer.unused" [K], and the Config and update count in __metadata__.
// The optimizer's moments are a second file (Adam.Save).

func (m *Model) meta() map[string]string {
	c := m.Cfg
	return map[string]string{
		"format": "igpt-vqvae", "hidden": strconv.Itoa(c.Hidden), "res_hidden": strconv.Itoa(c.ResHidden),
		"res_blocks": strconv.Itoa(c.ResBlocks), "codes": strconv.Itoa(c.K), "code_dim": strconv.Itoa(c.D),
		"factor": strconv.Itoa(c.Factor), "beta": ftoa(c.Beta), "decay": ftoa(c.Decay),
		"epsilon": ftoa(c.Epsilon), "dead_after": strconv.Itoa(c.DeadAfter), "updates": strconv.Itoa(m.Updates),
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// Weight is one named float32 array of the model, as a gorgonia tensor
// over the model's own memory (no copy).
type Weight struct {
	Name string
	T    *tensor.Dense
}

// Weights lists the encoder's and decoder's parameters, then the
// codebook and its EMA statistics, in file order, as tensors over the
// model's slices: what Save writes and Load fills.
func (m *Model) Weights() []Weight {
	ws := make([]Weight, 0, len(m.Params)+3)
	for _, p := range m.Params {
		ws = append(ws, Weight{p.Name, kernels.Dense(p.W, p.Shape...)})
	}
	K, D := m.Cfg.K, m.Cfg.D
	return append(ws,
		Weight{"quantizer.codebook", kernels.Dense(m.Codebook, K, D)},
		Weight{"quantizer.ema_count", kernels.Dense(m.EMACount, K)},
		Weight{"quantizer.ema_sum", kernels.Dense(m.EMASum, K, D)})
}

// Save writes the model as safetensors.
func (m *Model) Save(w io.Writer) error {
	var ts []model.WTensor
	for _, wt := range m.Weights() {
		t, err := model.WTensorOf(wt.Name, wt.T)
		if err != nil {
			return fmt.Errorf("vqvae: save: %w", err)
		}
		ts = append(ts, t)
	}
	unused := make([]float64, len(m.Unused))
	for i, u := range m.Unused {
		unused[i] = float64(u)
	}
	ts = append(ts, model.WTensor{Name: "quantizer.unused", Shape: []int{m.Cfg.K}, F64: unused})
	if err := model.WriteSafetensors(w, ts, m.meta()); err != nil {
		return fmt.Errorf("vqvae: save: %w", err)
	}
	return nil
}

// Load reads a model written by Save.
func Load(r io.Reader) (*Model, error) {
	st, err := model.ReadSafetensors(r)
	if err != nil {
		return nil, fmt.Errorf("vqvae: load: %w", err)
	}
	md := st.Metadata
	if md["format"] != "igpt-vqvae" {
		return nil, fmt.Errorf("vqvae: load: format %q, want igpt-vqvae", md["format"])
	}
	var cfg Config
	ints := []struct {
		key string
		dst *int
	}{{"hidden", &cfg.Hidden}, {"res_hidden", &cfg.ResHidden}, {"res_blocks", &cfg.ResBlocks}, {"codes", &cfg.K},
		{"code_dim", &cfg.D}, {"factor", &cfg.Factor}, {"dead_after", &cfg.DeadAfter}}
	for _, f := range ints {
		if *f.dst, err = strconv.Atoi(md[f.key]); err != nil {
			return nil, fmt.Errorf("vqvae: load: metadata %s = %q: %w", f.key, md[f.key], err)
		}
	}
	for _, f := range []struct {
		key string
		dst *float64
	}{{"beta", &cfg.Beta}, {"decay", &cfg.Decay}, {"epsilon", &cfg.Epsilon}} {
		if *f.dst, err = strconv.ParseFloat(md[f.key], 64); err != nil {
			return nil, fmt.Errorf("vqvae: load: metadata %s = %q: %w", f.key, md[f.key], err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("vqvae: load: metadata: %w", err)
	}
	if err := fitsFile(cfg, st); err != nil {
		return nil, fmt.Errorf("vqvae: load: %w", err)
	}
	m, err := New(cfg, 0)
	if err != nil {
		return nil, fmt.Errorf("vqvae: load: %w", err)
	}
	if m.Updates, err = strconv.Atoi(md["updates"]); err != nil || m.Updates < 0 {
		return nil, fmt.Errorf("vqvae: load: metadata updates = %q", md["updates"])
	}
	K := cfg.K
	ws := m.Weights()
	for _, w := range ws {
		if err := readTensor(st, w); err != nil {
			return nil, fmt.Errorf("vqvae: load: %w", err)
		}
	}
	t, ok := st.Tensors["quantizer.unused"]
	if !ok || !slices.Equal(t.Shape, []int{K}) {
		return nil, fmt.Errorf("vqvae: load: quantizer.unused missing or not [%d]", K)
	}
	u, err := t.Float64s()
	if err != nil {
		return nil, fmt.Errorf("vqvae: load: quantizer.unused: %w", err)
	}
	for i, v := range u {
		m.Unused[i] = int32(v)
	}
	if n := len(ws) + 1; len(st.Tensors) != n {
		return nil, fmt.Errorf("vqvae: load: %d tensors, want %d", len(st.Tensors), n)
	}
	return m, nil
}

// readTensor decodes the F32 tensor w.Name into w's memory.
func readTensor(st *model.SafeTensors, w Weight) error {
	t, ok := st.Tensors[w.Name]
	if !ok {
		return fmt.Errorf("tensor %s missing", w.Name)
	}
	if t.DType != "F32" {
		return fmt.Errorf("tensor %s is %s %v, want F32 %v", w.Name, t.DType, t.Shape, w.T.Shape())
	}
	if err := t.Into(w.T); err != nil {
		return fmt.Errorf("tensor %s: %w", w.Name, err)
	}
	return nil
}

// fitsFile checks, before anything is allocated for it, that the model the
// metadata describes is one the file's tensors can hold (its F32 weights
// need 4 bytes a value) and within MaxWeights: a 150-byte file claiming
// hidden = 131072 is refused here, not with a 618 GB allocation.
func fitsFile(cfg Config, st *model.SafeTensors) error {
	var have int
	for _, t := range st.Tensors {
		have += len(t.Data)
	}
	need := cfg.Weights()
	desc := fmt.Sprintf("hidden=%d res_hidden=%d res_blocks=%d codes=%d code_dim=%d factor=%d", cfg.Hidden, cfg.ResHidden, cfg.ResBlocks, cfg.K, cfg.D, cfg.Factor)
	if need > MaxWeights {
		return fmt.Errorf("metadata %s: %.4g weights, more than the %d a VQ-VAE may hold; the file is damaged or forged", desc, need, MaxWeights)
	}
	if 4*need > float64(have) {
		return fmt.Errorf("metadata %s needs %.0f bytes of F32 weights, the file's tensors hold %d; the file is damaged or forged", desc, 4*need, have)
	}
	return nil
}
