package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/igpt/igpt/internal/kernels"
	"gorgonia.org/tensor"
)

// Params holds every parameter of a model in one []float32 (Data), with
// named views into it in Hugging Face ImageGPT order (the order of
// Tensors). A gradient or an Adam moment has the same type and layout.
//
// Layouts are row-major, as Hugging Face stores them:
//
//	WTE     [V+1, d]   token embeddings; row V is the start-of-sequence vector
//	WPE     [T, d]     position embeddings
//	per layer:
//	  LN1     [d]      gain of the norm before attention
//	  CAttn   [d, 3d]  qkv = x·CAttn (Conv1D: input × output), columns q | k | v
//	  AttnProj [d, d]  attention output projection, y = a·AttnProj
//	  LN2     [d]      gain of the norm before the MLP
//	  FC      [d, 4d]  u = x·FC
//	  MLPProj [4d, d]  y = gelu(u)·MLPProj
//	LNF     [d]        final norm gain
//	LMHead  [V, d]     logits = x·LMHeadᵀ (Linear: output × input)
type Params struct {
	Config Config
	Data   []float32

	WTE, WPE []float32
	Layers   []LayerParams
	LNF      []float32
	LMHead   []float32
}

// LayerParams are the views of one transformer block.
type LayerParams struct {
	LN1, CAttn, AttnProj, LN2, FC, MLPProj []float32
}

// Tensor is one named parameter tensor: a view into Params.Data.
type Tensor struct {
	Name  string // Hugging Face ImageGPT name, e.g. "transformer.h.0.attn.c_attn.weight"
	Shape []int
	Data  []float32
}

// Dense returns the tensor as a gorgonia tensor over Data (no copy: writes
// through it change the parameters), the type in which parameters leave
// the package by name and shape.
func (t Tensor) Dense() *tensor.Dense { return kernels.Dense(t.Data, t.Shape...) }

// NewParams allocates zeroed parameters for cfg in one allocation.
func NewParams(cfg Config) (*Params, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := cfg.NumParams()
	if n > math.MaxInt {
		return nil, fmt.Errorf("model: %v: %d parameters do not fit in memory", cfg, n)
	}
	p := &Params{Config: cfg, Data: make([]float32, n)}
	p.setViews()
	return p, nil
}

func (p *Params) setViews() {
	c := p.Config
	d, off := c.D, 0
	take := func(n int) []float32 {
		s := p.Data[off : off+n : off+n]
		off += n
		return s
	}
	p.WTE = take((c.Vocab + 1) * d)
	p.WPE = take(c.Seq * d)
	p.Layers = make([]LayerParams, c.Layers)
	for i := range p.Layers {
		l := &p.Layers[i]
		l.LN1 = take(d)
		l.CAttn = take(d * 3 * d)
		l.AttnProj = take(d * d)
		l.LN2 = take(d)
		l.FC = take(d * 4 * d)
		l.MLPProj = take(4 * d * d)
	}
	p.LNF = take(d)
	p.LMHead = take(c.Vocab * d)
	if off != len(p.Data) {
		panic(fmt.Sprintf("model: parameter views cover %d of %d values", off, len(p.Data)))
	}
}

// Tensors lists the parameter tensors in checkpoint order (that of
// ../shared/bench/igpt_reference.py's param_shapes), with their Hugging
// Face names and shapes.
func (p *Params) Tensors() []Tensor {
	c := p.Config
	d, T, V := c.D, c.Seq, c.Vocab
	ts := make([]Tensor, 0, 6*c.Layers+4)
	add := func(name string, data []float32, shape ...int) {
		ts = append(ts, Tensor{Name: name, Shape: shape, Data: data})
	}
	add("transformer.wte.weight", p.WTE, V+1, d)
	add("transformer.wpe.weight", p.WPE, T, d)
	for i, l := range p.Layers {
		pre := fmt.Sprintf("transformer.h.%d.", i)
		add(pre+"ln_1.weight", l.LN1, d)
		add(pre+"attn.c_attn.weight", l.CAttn, d, 3*d)
		add(pre+"attn.c_proj.weight", l.AttnProj, d, d)
		add(pre+"ln_2.weight", l.LN2, d)
		add(pre+"mlp.c_fc.weight", l.FC, d, 4*d)
		add(pre+"mlp.c_proj.weight", l.MLPProj, 4*d, d)
	}
	add("transformer.ln_f.weight", p.LNF, d)
	add("lm_head.weight", p.LMHead, V, d)
	return ts
}

// IsGain reports whether a tensor name is a norm gain (ln_1, ln_2, ln_f),
// the only 1-D parameters; the optimizer does not decay them.
func IsGain(name string) bool {
	return strings.HasSuffix(name, "ln_1.weight") || strings.HasSuffix(name, "ln_2.weight") ||
		strings.HasSuffix(name, "ln_f.weight")
}

// Clone returns a deep copy.
func (p *Params) Clone() *Params {
	q := &Params{Config: p.Config, Data: append([]float32(nil), p.Data...)}
	q.setViews()
	return q
}

// Zero sets every value to 0.
func (p *Params) Zero() { clear(p.Data) }

// Init initialises the parameters for training as openai/image-gpt's GPT-2
// lineage does (DESIGN.md, "The model"): every matrix and embedding (the
// start vector included) from N(0, 0.02²), the residual output projections
// (attn.c_proj, mlp.c_proj) from N(0, (0.02/√(2L))²), norm gains 1, and the
// head lm_head 0. The draw is deterministic for a seed (PCG).
//
// openai/image-gpt's src/model.py differs in detail (wpe std 0.01, q/k/v
// std 1/√d, attention projection std 1/√(d·L), MLP projection unscaled);
// this package follows the GPT-2 recipe of the design.
func (p *Params) Init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x1697_2020))
	fill := func(s []float32, std float64) {
		for i := range s {
			s[i] = float32(rng.NormFloat64() * std)
		}
	}
	const std = 0.02
	resid := std / math.Sqrt(2*float64(p.Config.Layers))
	fill(p.WTE, std)
	fill(p.WPE, std)
	for _, l := range p.Layers {
		ones(l.LN1)
		fill(l.CAttn, std)
		fill(l.AttnProj, resid)
		ones(l.LN2)
		fill(l.FC, std)
		fill(l.MLPProj, resid)
	}
	ones(p.LNF)
	clear(p.LMHead)
}

func ones(s []float32) {
	for i := range s {
		s[i] = 1
	}
}
