package vqvae

import (
	"fmt"
	"io"
	"strconv"

	"github.com/igpt/igpt/model"
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

// Save writes the model as safetensors.
func (m *Model) Save(w io.Writer) error {
	ts := make([]model.WTensor, 0, len(m.Params)+4)
	for _, p := range m.Params {
		ts = append(ts, model.WTensor{Name: p.Name, Shape: p.Shape, F32: p.W})
	}
	unused := make([]float64, len(m.Unused))
	for i, u := range m.Unused {
		unused[i] = float64(u)
	}
	K, D := m.Cfg.K, m.Cfg.D
	ts = append(ts,
		model.WTensor{Name: "quantizer.codebook", Shape: []int{K, D}, F32: m.Codebook},
		model.WTensor{Name: "quantizer.ema_count", Shape: []int{K}, F32: m.EMACount},
		model.WTensor{Name: "quantizer.ema_sum", Shape: []int{K, D}, F32: m.EMASum},
		model.WTensor{Name: "quantizer.unused", Shape: []int{K}, F64: unused})
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
	m, err := New(cfg, 0)
	if err != nil {
		return nil, fmt.Errorf("vqvae: load: %w", err)
	}
	if m.Updates, err = strconv.Atoi(md["updates"]); err != nil || m.Updates < 0 {
		return nil, fmt.Errorf("vqvae: load: metadata updates = %q", md["updates"])
	}
	K, D := cfg.K, cfg.D
	dst := map[string][]float32{"quantizer.codebook": m.Codebook, "quantizer.ema_count": m.EMACount, "quantizer.ema_sum": m.EMASum}
	shapes := map[string][]int{"quantizer.codebook": {K, D}, "quantizer.ema_count": {K}, "quantizer.ema_sum": {K, D}}
	for _, p := range m.Params {
		dst[p.Name], shapes[p.Name] = p.W, p.Shape
	}
	for name, d := range dst {
		if err := readTensor(st, name, shapes[name], d); err != nil {
			return nil, fmt.Errorf("vqvae: load: %w", err)
		}
	}
	t, ok := st.Tensors["quantizer.unused"]
	if !ok || !sameShape(t.Shape, []int{K}) {
		return nil, fmt.Errorf("vqvae: load: quantizer.unused missing or not [%d]", K)
	}
	u, err := t.Float64s()
	if err != nil {
		return nil, fmt.Errorf("vqvae: load: quantizer.unused: %w", err)
	}
	for i, v := range u {
		m.Unused[i] = int32(v)
	}
	if n := len(dst) + 1; len(st.Tensors) != n {
		return nil, fmt.Errorf("vqvae: load: %d tensors, want %d", len(st.Tensors), n)
	}
	return m, nil
}

// readTensor copies the F32 tensor name of the given shape into dst.
func readTensor(st *model.SafeTensors, name string, shape []int, dst []float32) error {
	t, ok := st.Tensors[name]
	if !ok {
		return fmt.Errorf("tensor %s missing", name)
	}
	if t.DType != "F32" || !sameShape(t.Shape, shape) {
		return fmt.Errorf("tensor %s is %s %v, want F32 %v", name, t.DType, t.Shape, shape)
	}
	_, err := t.Float32s(dst)
	return err
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
