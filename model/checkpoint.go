package model

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Checkpoints. A model checkpoint is a safetensors file with the parameters
// under their Hugging Face ImageGPT names and layouts (Params.Tensors), F32,
// and the configuration in __metadata__ as ../shared/bench/igpt_reference.py
// writes it (n_layer, n_embd, n_head, n_positions, n_vocab; format "pt").
// The optimizer state is a second safetensors file with the same names
// under "m." and "v.", and the trainer's position a small JSON document
// (TrainerState). Everything works on io.Writer/io.Reader; where and how
// atomically the bytes land is the caller's business.

// Metadata keys of a model checkpoint.
const (
	MetaLayers = "n_layer"
	MetaD      = "n_embd"
	MetaHeads  = "n_head"
	MetaSeq    = "n_positions"
	MetaVocab  = "n_vocab"
)

func configMeta(c Config, extra map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range extra {
		m[k] = v
	}
	m[MetaLayers] = strconv.Itoa(c.Layers)
	m[MetaD] = strconv.Itoa(c.D)
	m[MetaHeads] = strconv.Itoa(c.Heads)
	m[MetaSeq] = strconv.Itoa(c.Seq)
	m[MetaVocab] = strconv.Itoa(c.Vocab)
	m["format"] = "pt"
	return m
}

func paramTensors(p *Params, prefix string) []WTensor {
	ts := p.Tensors()
	out := make([]WTensor, len(ts))
	for i, t := range ts {
		out[i] = WTensor{Name: prefix + t.Name, Shape: t.Shape, F32: t.Data}
	}
	return out
}

// SaveCheckpoint writes the parameters and the configuration, plus the
// caller's extra metadata (string pairs; the config keys win), as
// safetensors.
func SaveCheckpoint(w io.Writer, p *Params, extra map[string]string) error {
	if err := WriteSafetensors(w, paramTensors(p, ""), configMeta(p.Config, extra)); err != nil {
		return fmt.Errorf("model: save checkpoint: %w", err)
	}
	return nil
}

var layerName = regexp.MustCompile(`^transformer\.h\.(\d+)\.`)

// configOf infers the configuration from tensor shapes, and the head count
// from the metadata's n_head (which the shapes do not determine).
func configOf(st *SafeTensors, heads int) (Config, error) {
	wte, ok1 := st.Tensors["transformer.wte.weight"]
	wpe, ok2 := st.Tensors["transformer.wpe.weight"]
	if !ok1 || !ok2 || len(wte.Shape) != 2 || len(wpe.Shape) != 2 {
		return Config{}, errors.New("missing or malformed transformer.wte.weight / transformer.wpe.weight")
	}
	L := 0
	for name := range st.Tensors {
		if m := layerName.FindStringSubmatch(name); m != nil {
			i, err := strconv.Atoi(m[1])
			if err == nil && i+1 > L && i < 1<<20 {
				L = i + 1
			}
		}
	}
	c := Config{Layers: L, D: wte.Shape[1], Heads: heads, Seq: wpe.Shape[0], Vocab: wte.Shape[0] - 1}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// loadParams fills new parameters for cfg from st's tensors named prefix +
// HF name; every one must be present with its shape. It returns the names
// in st it did not use.
func loadParams(st *SafeTensors, cfg Config, prefix string) (*Params, map[string]bool, error) {
	// Every parameter comes from an element of a tensor in the file, so a
	// config needing far more than the file holds (a stray
	// "transformer.h.1048575." name, a huge n_embd) is refused before
	// anything is allocated. A small shortfall is left to the per-tensor
	// checks below, which name the missing tensor.
	var have int64
	for _, t := range st.Tensors {
		have += int64(len(t.Data) / stSizes[t.DType])
	}
	if need := cfg.NumParams(); need > have+1<<20 {
		return nil, nil, fmt.Errorf("%v needs %d parameters but the file's tensors hold only %d values", cfg, need, have)
	}
	p, err := NewParams(cfg)
	if err != nil {
		return nil, nil, err
	}
	unused := make(map[string]bool, len(st.Tensors))
	for name := range st.Tensors {
		unused[name] = true
	}
	var missing []string
	for _, t := range p.Tensors() {
		name := prefix + t.Name
		s, ok := st.Tensors[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		delete(unused, name)
		if !sameShape(s.Shape, t.Shape) {
			return nil, nil, fmt.Errorf("%s: shape %v, want %v for %v", name, s.Shape, t.Shape, cfg)
		}
		if _, err := s.Float32s(t.Data); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("missing %d tensors for %v: %s", len(missing), cfg, strings.Join(missing, ", "))
	}
	return p, unused, nil
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

func sortedKeys(m map[string]bool) []string {
	s := make([]string, 0, len(m))
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// LoadCheckpoint reads a checkpoint written by SaveCheckpoint (or by
// igpt_reference.py init): the configuration comes from the shapes and the
// metadata's n_head, and the metadata must agree with the shapes. Any
// floating-point dtype is accepted and converted to float32. It returns the
// parameters and the metadata.
func LoadCheckpoint(r io.Reader) (*Params, map[string]string, error) {
	st, err := ReadSafetensors(r)
	if err != nil {
		return nil, nil, fmt.Errorf("model: load checkpoint: %w", err)
	}
	p, err := paramsFromSafetensors(st)
	if err != nil {
		return nil, nil, fmt.Errorf("model: load checkpoint: %w", err)
	}
	return p, st.Metadata, nil
}

func paramsFromSafetensors(st *SafeTensors) (*Params, error) {
	hs, ok := st.Metadata[MetaHeads]
	if !ok {
		return nil, fmt.Errorf("no %s in the metadata", MetaHeads)
	}
	heads, err := strconv.Atoi(hs)
	if err != nil {
		return nil, fmt.Errorf("metadata %s = %q: %w", MetaHeads, hs, err)
	}
	cfg, err := configOf(st, heads)
	if err != nil {
		return nil, err
	}
	for key, want := range map[string]int{MetaLayers: cfg.Layers, MetaD: cfg.D, MetaSeq: cfg.Seq, MetaVocab: cfg.Vocab} {
		if v, ok := st.Metadata[key]; ok && v != strconv.Itoa(want) {
			return nil, fmt.Errorf("metadata %s = %s but the tensors say %d", key, v, want)
		}
	}
	p, unused, err := loadParams(st, cfg, "")
	if err != nil {
		return nil, err
	}
	if len(unused) > 0 {
		return nil, fmt.Errorf("unexpected tensors for %v: %s", cfg, strings.Join(sortedKeys(unused), ", "))
	}
	return p, nil
}

// SaveState writes the optimizer's moments (tensors "m.<name>" and
// "v.<name>", HF names) and its settings and step in the metadata.
func (o *Optimizer) SaveState(w io.Writer) error {
	ts := append(paramTensors(o.M, "m."), paramTensors(o.V, "v.")...)
	meta := configMeta(o.M.Config, map[string]string{
		"step":         strconv.Itoa(o.Step),
		"beta1":        strconv.FormatFloat(float64(o.Beta1), 'g', -1, 32),
		"beta2":        strconv.FormatFloat(float64(o.Beta2), 'g', -1, 32),
		"eps":          strconv.FormatFloat(float64(o.Eps), 'g', -1, 32),
		"weight_decay": strconv.FormatFloat(float64(o.WeightDecay), 'g', -1, 32),
		"clip_norm":    strconv.FormatFloat(o.ClipNorm, 'g', -1, 64),
	})
	if err := WriteSafetensors(w, ts, meta); err != nil {
		return fmt.Errorf("model: save optimizer state: %w", err)
	}
	return nil
}

// LoadState reads what SaveState wrote into o (whose configuration must
// match): the moments and the step. The hyper-parameters in the file are
// not applied (they are the caller's configuration); use
// OptimizerStateMeta to read them.
func (o *Optimizer) LoadState(r io.Reader) error {
	st, err := ReadSafetensors(r)
	if err != nil {
		return fmt.Errorf("model: load optimizer state: %w", err)
	}
	cfg := o.M.Config
	for key, want := range map[string]int{MetaLayers: cfg.Layers, MetaD: cfg.D, MetaSeq: cfg.Seq, MetaVocab: cfg.Vocab} {
		if v := st.Metadata[key]; v != strconv.Itoa(want) {
			return fmt.Errorf("model: load optimizer state: %s = %q, want %d", key, v, want)
		}
	}
	step, err := strconv.Atoi(st.Metadata["step"])
	if err != nil || step < 0 {
		return fmt.Errorf("model: load optimizer state: bad step %q", st.Metadata["step"])
	}
	for _, part := range []struct {
		prefix string
		dst    *Params
	}{{"m.", o.M}, {"v.", o.V}} {
		for _, t := range part.dst.Tensors() {
			s, ok := st.Tensors[part.prefix+t.Name]
			if !ok || !sameShape(s.Shape, t.Shape) || s.DType != "F32" {
				return fmt.Errorf("model: load optimizer state: %s%s missing or not F32 %v", part.prefix, t.Name, t.Shape)
			}
			if _, err := s.Float32s(t.Data); err != nil {
				return fmt.Errorf("model: load optimizer state: %w", err)
			}
		}
	}
	if n := 2 * len(o.M.Tensors()); len(st.Tensors) != n {
		return fmt.Errorf("model: load optimizer state: %d tensors, want %d", len(st.Tensors), n)
	}
	o.Step = step
	return nil
}
