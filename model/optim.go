package model

import (
	"fmt"
	"math"

	"github.com/igpt/igpt/internal/kernels"
)

// Schedule is the learning rate at each step: linear warm-up from LR/Warmup
// to LR over the first Warmup steps, then cosine decay to 0 at step Total.
// Steps count from 1.
type Schedule struct {
	LR     float64 `json:"lr"`
	Warmup int     `json:"warmup"`
	Total  int     `json:"total"`
}

// At returns the learning rate of step (1-based): LR·step/Warmup during
// warm-up, then LR·(1+cos(π·(step−Warmup)/(Total−Warmup)))/2, and 0 from
// step Total on.
func (s Schedule) At(step int) float64 {
	if step < 1 {
		return 0
	}
	if step <= s.Warmup {
		return s.LR * float64(step) / float64(s.Warmup)
	}
	if step >= s.Total {
		return 0
	}
	p := float64(step-s.Warmup) / float64(s.Total-s.Warmup)
	return s.LR * 0.5 * (1 + math.Cos(math.Pi*p))
}

// Optimizer is Adam with β = (0.9, 0.95), ε = 1e-8 by default, optional
// decoupled weight decay (AdamW) and optional global gradient-norm
// clipping. Its moments M and V have the parameters' layout and live in one
// allocation.
//
// Weight decay applies to the matrices and embeddings (wte, wpe, c_attn,
// c_proj, c_fc, lm_head) and not to the norm gains, whose natural value is 1.
type Optimizer struct {
	Beta1, Beta2, Eps float32
	WeightDecay       float32 // decoupled: p -= lr·WeightDecay·p each step (0: plain Adam)
	ClipNorm          float64 // clip the global gradient L2 norm to this (0: no clipping)
	Step              int     // steps taken; the next Update is step Step+1

	M, V *Params

	data  []float32 // M.Data and V.Data
	runs  []span    // contiguous ranges of decayed / not decayed parameters
	grads [][]float32
}

type span struct {
	lo, hi int
	decay  bool
}

// NewOptimizer returns an optimizer with zero moments for cfg.
func NewOptimizer(cfg Config) (*Optimizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := int(cfg.NumParams())
	o := &Optimizer{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, data: make([]float32, 2*n), grads: make([][]float32, 1)}
	o.M = &Params{Config: cfg, Data: o.data[:n:n]}
	o.V = &Params{Config: cfg, Data: o.data[n:]}
	o.M.setViews()
	o.V.setViews()
	off := 0
	for _, t := range o.M.Tensors() {
		decay := !IsGain(t.Name)
		if k := len(o.runs); k > 0 && o.runs[k-1].decay == decay {
			o.runs[k-1].hi += len(t.Data)
		} else {
			o.runs = append(o.runs, span{off, off + len(t.Data), decay})
		}
		off += len(t.Data)
	}
	return o, nil
}

// Update clips the gradients (if ClipNorm > 0), takes one Adam step with
// learning rate lr and returns the gradient norm before clipping. It does
// not allocate.
func (o *Optimizer) Update(p, g *Params, lr float64) (gradNorm float64, err error) {
	if err := o.check(p, g); err != nil {
		return 0, err
	}
	o.grads[0] = g.Data
	gradNorm = kernels.GradNormClip(o.grads, o.ClipNorm)
	o.grads[0] = nil
	return gradNorm, o.Apply(p, g, lr)
}

// Apply takes one Adam step with learning rate lr on the gradients as they
// are, for a caller that measured and clipped them itself (together with
// other parameters', as fine-tuning does with its head).
func (o *Optimizer) Apply(p, g *Params, lr float64) error {
	if err := o.check(p, g); err != nil {
		return err
	}
	o.Step++
	if o.WeightDecay == 0 {
		kernels.AdamW(p.Data, g.Data, o.M.Data, o.V.Data, o.Step, float32(lr), o.Beta1, o.Beta2, o.Eps, 0)
		return nil
	}
	for _, r := range o.runs {
		wd := float32(0)
		if r.decay {
			wd = o.WeightDecay
		}
		kernels.AdamW(p.Data[r.lo:r.hi], g.Data[r.lo:r.hi], o.M.Data[r.lo:r.hi], o.V.Data[r.lo:r.hi],
			o.Step, float32(lr), o.Beta1, o.Beta2, o.Eps, wd)
	}
	return nil
}

func (o *Optimizer) check(p, g *Params) error {
	if n := len(o.M.Data); len(p.Data) != n || len(g.Data) != n {
		return fmt.Errorf("model: optimizer for %d parameters given %d and %d gradients", n, len(p.Data), len(g.Data))
	}
	return nil
}
