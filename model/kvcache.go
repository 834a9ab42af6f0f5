package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/igpt/igpt/internal/kernels"
)

// Incremental autoregressive decoding (AR objective) with a per-layer
// key/value cache, batched over B sequences. Each Step runs one position t
// of every sequence through the model, exactly the computation Forward does
// for row t (DESIGN.md, "The model"):
//
//	x[B,C]   = wte[sos if t = 0 else x_{t-1}] + wpe[t]
//	per layer l:
//	  qkv[B,3C] = rmsnorm(x, ln_1) · c_attn          (GEMM over the batch)
//	  k, v      → cache[l][b,h,t,:]
//	  att[B,C]  = softmax(q·K[0..t]ᵀ/√hd) · V[0..t]  per (b,h), in parallel
//	  x        += att · attn.c_proj                  (GEMM)
//	  x        += quick_gelu(rmsnorm(x, ln_2) · c_fc) · mlp.c_proj
//	logits[B,V] = rmsnorm(x, ln_f) · lm_headᵀ
//
// The matrix products use the internal/kernels GEMM (m = B rows); the
// attention of the one new query against the t+1 cached keys is a short
// loop per (b, h), spread over the kernels' worker pool
// (kernels.ParallelFor, the Sampler's step job passed by pointer), so a
// steady-state Step does not allocate.

// Sampler decodes B sequences position by position with a key/value cache
// (the AR objective). It reads the model's parameters at every Step (they
// must not change during a decode; changing them between Reset and the
// next Step is fine) but none of the model's workspaces, so several
// Samplers may share a Model (their kernel calls queue on the kernels'
// pool). A Sampler is not safe for concurrent use; it owns no goroutines.
type Sampler struct {
	m     *Model
	batch int // B: sequences decoded together
	maxT  int // positions the cache holds (<= Config.Seq)
	t     int // the next position Step computes

	x   []float32 // [B, C]  residual stream h of position t
	ln  []float32 // [B, C]  rmsnorm(x)
	qkv []float32 // [B, 3C] q | k | v of position t
	att []float32 // [B, C]  attention output, heads concatenated
	fch []float32 // [B, 4C] c_fc output, then quick_gelu in place

	// k, v [L, B, H, maxT, hd]: the cached keys and values, head-major so
	// that one (b, h)'s keys are a contiguous [t+1, hd] block.
	k, v   []float32
	scores []float32 // [B, H, maxT] attention probabilities of the new query

	job   attnStep
	limit int // thread limit of the attention step (0: all; 1 after Close)
}

// NewSampler returns a Sampler for batches of B sequences of up to
// Config.Seq positions. Its cache holds 2·L·B·Seq·d float32 values.
func NewSampler(m *Model, B int) (*Sampler, error) {
	return newSampler(m, B, m.Config.Seq)
}

// newSampler is NewSampler with a cache of maxT <= Config.Seq positions.
func newSampler(m *Model, B, maxT int) (*Sampler, error) {
	if m == nil || m.Params == nil {
		return nil, errors.New("model: sampler of a nil model")
	}
	cfg := m.Config
	if B < 1 {
		return nil, fmt.Errorf("model: sampler batch %d, want >= 1", B)
	}
	if maxT < 1 || maxT > cfg.Seq {
		return nil, fmt.Errorf("model: sampler length %d, want 1 <= length <= %d", maxT, cfg.Seq)
	}
	L, C, H := cfg.Layers, cfg.D, cfg.Heads
	if cache := float64(L) * float64(B) * float64(maxT) * float64(C); cache > math.MaxInt/4 {
		return nil, fmt.Errorf("model: a %v cache for %d sequences of %d does not fit in memory", cfg, B, maxT)
	}
	s := &Sampler{m: m, batch: B, maxT: maxT,
		x: make([]float32, B*C), ln: make([]float32, B*C), qkv: make([]float32, B*3*C),
		att: make([]float32, B*C), fch: make([]float32, B*4*C),
		k: make([]float32, L*B*maxT*C), v: make([]float32, L*B*maxT*C),
		scores: make([]float32, B*H*maxT),
	}
	return s, nil
}

// Close makes the Sampler run on the calling goroutine alone (it owns no
// goroutines to stop since it shares the kernels' pool); it is idempotent,
// and a closed Sampler still works.
func (s *Sampler) Close() { s.limit = 1 }

// Reset starts a new batch of sequences: the next Step computes position 0.
func (s *Sampler) Reset() { s.t = 0 }

// Pos returns the position the next Step computes (the number of Steps
// since the last Reset).
func (s *Sampler) Pos() int { return s.t }

// Batch returns B, the number of sequences decoded together.
func (s *Sampler) Batch() int { return s.batch }

// Len returns the number of positions the cache holds (Config.Seq for a
// Sampler from NewSampler).
func (s *Sampler) Len() int { return s.maxT }

// Step advances every sequence by one position t = Pos(): tokens [B] are
// the tokens at position t−1 (ignored, and may be nil, at t = 0), and
// logits [B,V] receives the logits of position t, the prediction of token
// t, exactly as Forward's Logits()[b,t,:] for the AR objective (up to
// float32 rounding). logits may be nil to skip the head (positions whose
// token is already known). Step does not allocate.
func (s *Sampler) Step(tokens []int32, logits []float32) error {
	cfg, p := s.m.Config, s.m.Params
	B, C, H, V := s.batch, cfg.D, cfg.Heads, cfg.Vocab
	t := s.t
	if t >= s.maxT {
		return fmt.Errorf("model: sampler step at position %d, past its length %d (Reset first)", t, s.maxT)
	}
	if logits != nil && len(logits) < B*V {
		return fmt.Errorf("model: sampler logits hold %d values, want [B=%d, V=%d]", len(logits), B, V)
	}
	if t > 0 {
		if len(tokens) < B {
			return fmt.Errorf("model: sampler step got %d tokens for %d sequences", len(tokens), B)
		}
		for b, id := range tokens[:B] {
			if id < 0 || int(id) >= V {
				return fmt.Errorf("model: token %d of sequence %d at position %d out of range [0,%d)", id, b, t-1, V)
			}
		}
	}

	// x[b,:] = wte[id] + wpe[t]   (id = V, the start vector, at t = 0)
	wpe := p.WPE[t*C : (t+1)*C]
	for b := 0; b < B; b++ {
		id := V
		if t > 0 {
			id = int(tokens[b])
		}
		e := p.WTE[id*C : (id+1)*C]
		x := s.x[b*C : (b+1)*C]
		for i := range x {
			x[i] = e[i] + wpe[i]
		}
	}

	hd := C / H
	layer := B * s.maxT * C
	for l := range p.Layers {
		lp := &p.Layers[l]
		rmsnormForward(s.ln, nil, s.x, lp.LN1, B, C)
		matmulForward(s.qkv, s.ln, lp.CAttn, B, C, 3*C, false) // [B,3C]
		s.job = attnStep{qkv: s.qkv, att: s.att, scores: s.scores,
			k: s.k[l*layer : (l+1)*layer], v: s.v[l*layer : (l+1)*layer],
			t: t, maxT: s.maxT, C: C, H: H, hd: hd, scale: float32(1 / math.Sqrt(float64(hd)))}
		kernels.ParallelFor(B*H, s.limit, &s.job) // att [B,C]
		s.job = attnStep{}
		matmulForward(s.x, s.att, lp.AttnProj, B, C, C, true)
		rmsnormForward(s.ln, nil, s.x, lp.LN2, B, C)
		matmulForward(s.fch, s.ln, lp.FC, B, C, 4*C, false) // [B,4C]
		kernels.QuickGELUForward(s.fch, s.fch)
		matmulForward(s.x, s.fch, lp.MLPProj, B, 4*C, C, true)
	}
	if logits != nil {
		rmsnormForward(s.ln, nil, s.x, p.LNF, B, C)
		headForward(logits[:B*V], s.ln, p.LMHead, B, C, V) // [B,V]
	}
	s.t++
	return nil
}

// Prefill runs the known first P tokens of every sequence, prefix [B,P]
// (1 <= P <= Len()), through the model at once, as Forward does (GEMMs
// over B·P rows, the fused attention kernel), and fills the cache with
// their keys and values: it resets the Sampler, and the next Step, given
// the prefix's last tokens, computes position P. Much faster than P Steps
// for a long prefix (a half-image completion); it allocates a forward
// workspace of O(B·P·d) for the call.
func (s *Sampler) Prefill(prefix []int32) error {
	cfg, p := s.m.Config, s.m.Params
	B, C, H, V := s.batch, cfg.D, cfg.Heads, cfg.Vocab
	if len(prefix) == 0 || len(prefix)%B != 0 {
		return fmt.Errorf("model: prefill of %d tokens is not %d equal non-empty sequences", len(prefix), B)
	}
	P := len(prefix) / B
	if P > s.maxT {
		return fmt.Errorf("model: prefill of %d positions exceeds the sampler's %d", P, s.maxT)
	}
	for i, x := range prefix {
		if x < 0 || int(x) >= V {
			return fmt.Errorf("model: prefix token %d at [%d,%d] out of range [0,%d)", x, i/P, i%P, V)
		}
	}
	s.t = 0
	ids := make([]int32, B*P) // [B,P] inputs: sos, x_0 … x_{P-2}
	for b := 0; b < B; b++ {
		ids[b*P] = int32(V)
		copy(ids[b*P+1:(b+1)*P], prefix[b*P:(b+1)*P-1])
	}
	h := make([]float32, B*P*C) // [B,P,C]
	blk := newBlockActs(B, P, C, H, true, FP32)
	encoderForward(h, ids, p.WTE, p.WPE, B, P, C)
	hd, layer := C/H, B*s.maxT*C
	for l := range p.Layers {
		blockForward(h, h, &p.Layers[l], nil, &blk, B, P, C, H, true)
		// blk.qkv [B,P,3C] → cache [B,H,maxT,hd]
		kc, vc := s.k[l*layer:(l+1)*layer], s.v[l*layer:(l+1)*layer]
		for b := 0; b < B; b++ {
			for hh := 0; hh < H; hh++ {
				base := (b*H + hh) * s.maxT * hd
				for t := 0; t < P; t++ {
					row := blk.qkv[(b*P+t)*3*C : (b*P+t+1)*3*C]
					copy(kc[base+t*hd:base+(t+1)*hd], row[C+hh*hd:C+(hh+1)*hd])
					copy(vc[base+t*hd:base+(t+1)*hd], row[2*C+hh*hd:2*C+(hh+1)*hd])
				}
			}
		}
	}
	s.t = P
	return nil
}

// attnStep is one layer's attention for the new position t: task b·H+h
// appends (b, h)'s key and value to the cache and computes
//
//	att[b, h·hd:(h+1)·hd] = Σ_{j<=t} softmax_j(q·k_j·scale) · v_j
type attnStep struct {
	qkv, att, scores []float32 // [B,3C], [B,C], [B,H,maxT]
	k, v             []float32 // this layer's cache [B,H,maxT,hd]
	t, maxT, C, H    int
	hd               int
	scale            float32
}

func (j *attnStep) Run(task, _ int) {
	b, h := task/j.H, task%j.H
	C, hd, n := j.C, j.hd, j.t+1
	row := j.qkv[b*3*C : (b+1)*3*C]
	base := task * j.maxT * hd
	kc := j.k[base : base+n*hd] // [t+1, hd]
	vc := j.v[base : base+n*hd]
	copy(kc[j.t*hd:], row[C+h*hd:C+(h+1)*hd])
	copy(vc[j.t*hd:], row[2*C+h*hd:2*C+(h+1)*hd])
	q := row[h*hd : (h+1)*hd]
	s := j.scores[task*j.maxT : task*j.maxT+n] // [t+1]

	mx := float32(math.Inf(-1))
	for i := range s {
		v := dot32(q, kc[i*hd:(i+1)*hd]) * j.scale
		s[i] = v
		mx = max(mx, v)
	}
	var sum float32
	for i, v := range s {
		e := kernels.Exp32(v - mx)
		s[i] = e
		sum += e
	}
	o := j.att[b*C+h*hd : b*C+(h+1)*hd]
	clear(o)
	for i, p := range s {
		axpy32(o, p, vc[i*hd:(i+1)*hd])
	}
	inv := 1 / sum
	for i := range o {
		o[i] *= inv
	}
}

// dot32 returns Σ a[i]·b[i] (len(b) >= len(a)).
func dot32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy32 sets y[i] += alpha·x[i] (len(x) >= len(y)).
func axpy32(y []float32, alpha float32, x []float32) {
	x = x[:len(y)]
	i := 0
	for ; i+4 <= len(y); i += 4 {
		y[i] += alpha * x[i]
		y[i+1] += alpha * x[i+1]
		y[i+2] += alpha * x[i+2]
		y[i+3] += alpha * x[i+3]
	}
	for ; i < len(y); i++ {
		y[i] += alpha * x[i]
	}
}
