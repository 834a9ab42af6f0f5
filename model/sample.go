package model

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SampleOptions control how a token is drawn from a position's logits:
// the logits are divided by Temperature, restricted to the TopK most likely
// tokens, then to the nucleus (the smallest set of most likely tokens whose
// probability, renormalised after top-k, reaches TopP), and one token is
// drawn from what is left. Ties between equal logits are broken towards
// the lower token id, so TopK = 1 (or a tiny TopP) is greedy decoding.
type SampleOptions struct {
	Temperature float64 // > 0; 0 means 1
	TopK        int     // keep the K most likely tokens; 0 (or >= V): off
	TopP        float64 // nucleus mass in (0, 1); 0 or 1: off
	// Seed seeds the draws: sequence b of a batch uses its own PCG stream
	// (Seed, b), one uniform per sampled token, so results are
	// deterministic for a seed.
	Seed uint64
}

// Validate reports whether the options are usable.
func (o SampleOptions) Validate() error {
	switch {
	case math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) || o.Temperature < 0:
		return fmt.Errorf("model: sampling temperature %v, want > 0 (0 means 1)", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("model: sampling top-k %d, want >= 0 (0: off)", o.TopK)
	case math.IsNaN(o.TopP) || o.TopP < 0 || o.TopP > 1:
		return fmt.Errorf("model: sampling top-p %v, want in [0, 1] (0 or 1: off)", o.TopP)
	}
	return nil
}

// tokenPicker draws tokens from logits for one set of options; its
// scratch is reused across draws.
type tokenPicker struct {
	temp float64
	topK int     // 0: off
	topP float64 // 0: off
	p    []float64
	idx  []int32
}

func newTokenPicker(opt SampleOptions, V int) *tokenPicker {
	tp := &tokenPicker{temp: opt.Temperature, topK: opt.TopK, topP: opt.TopP,
		p: make([]float64, V), idx: make([]int32, V)}
	if tp.temp == 0 {
		tp.temp = 1
	}
	if tp.topK >= V {
		tp.topK = 0
	}
	if tp.topP >= 1 {
		tp.topP = 0
	}
	return tp
}

// pick draws one token from logits [V] with one uniform from rng.
func (tp *tokenPicker) pick(logits []float32, rng *rand.Rand) int32 {
	V := len(tp.p)
	logits = logits[:V]
	u := rng.Float64()
	if tp.topK == 1 {
		return argmax32(logits)
	}
	mx := logits[argmax32(logits)]
	inv := 1 / tp.temp
	if tp.topK == 0 && tp.topP == 0 {
		// the whole distribution, in token order
		var total float64
		for i, z := range logits {
			e := math.Exp(float64(z-mx) * inv)
			tp.p[i] = e
			total += e
		}
		return int32(drawIndex(tp.p, u*total))
	}
	// truncation: tokens by decreasing logit (ties: lower id first)
	for i := range tp.idx {
		tp.idx[i] = int32(i)
	}
	slices.SortFunc(tp.idx, func(a, b int32) int {
		if c := cmp.Compare(logits[b], logits[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	n := V
	if tp.topK > 0 {
		n = tp.topK
	}
	p := tp.p[:n]
	var total float64
	for i, id := range tp.idx[:n] {
		e := math.Exp(float64(logits[id]-mx) * inv)
		p[i] = e
		total += e
	}
	if tp.topP > 0 {
		// the smallest prefix whose mass reaches topP (at least one token)
		want, cum := tp.topP*total, 0.0
		for i, e := range p {
			cum += e
			if cum >= want {
				n = i + 1
				break
			}
		}
		p = p[:n]
		total = 0
		for _, e := range p {
			total += e
		}
	}
	return tp.idx[drawIndex(p, u*total)]
}

// drawIndex returns the first i with p[0]+…+p[i] > target, or the last
// i with p[i] > 0 if rounding leaves target at or beyond the sum.
func drawIndex(p []float64, target float64) int {
	var cum float64
	last := 0
	for i, e := range p {
		if e > 0 {
			last = i
		}
		cum += e
		if cum > target {
			return i
		}
	}
	return last
}

// argmax32 returns the index of the largest value, the lowest on ties.
func argmax32(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// sampleSetup checks a Sample call and returns the prefix length P and
// the output [B,n] with the prefix copied in.
func (m *Model) sampleSetup(prefix []int32, B, n int, opt SampleOptions) (int, []int32, error) {
	cfg := m.Config
	if err := opt.Validate(); err != nil {
		return 0, nil, err
	}
	if B < 1 {
		return 0, nil, fmt.Errorf("model: sample batch %d, want >= 1", B)
	}
	if n < 1 || n > cfg.Seq {
		return 0, nil, fmt.Errorf("model: sample length %d, want 1 <= n <= %d", n, cfg.Seq)
	}
	if len(prefix)%B != 0 {
		return 0, nil, fmt.Errorf("model: prefix of %d tokens is not %d equal sequences", len(prefix), B)
	}
	P := len(prefix) / B
	if P > n {
		return 0, nil, fmt.Errorf("model: prefix of %d tokens per sequence is longer than the length %d", P, n)
	}
	for i, x := range prefix {
		if x < 0 || int(x) >= cfg.Vocab {
			return 0, nil, fmt.Errorf("model: prefix token %d at [%d,%d] out of range [0,%d)", x, i/P, i%P, cfg.Vocab)
		}
	}
	out := make([]int32, B*n)
	for b := 0; b < B; b++ {
		copy(out[b*n:b*n+P], prefix[b*P:(b+1)*P])
	}
	return P, out, nil
}

// sequenceRNGs returns the per-sequence random streams of a seed.
func sequenceRNGs(seed uint64, B int) []*rand.Rand {
	r := make([]*rand.Rand, B)
	for b := range r {
		r[b] = rand.New(rand.NewPCG(seed, uint64(b)))
	}
	return r
}

// Sample completes B sequences for the AR objective: prefix [B,P] holds
// the known first P tokens of each (P = len(prefix)/B, 0 <= P <= n; nil
// for unconditional samples), and the returned [B,n] keeps them and
// continues each sequence to n <= Config.Seq tokens, drawn as opt says
// (a half-image completion is P = n/2). The prefix runs through the model
// at once (Sampler.Prefill), then the rest is decoded token by token with
// a key/value cache (a Sampler sized for n positions, made for the call);
// use NewSampler and Sampler.Sample to reuse one.
func (m *Model) Sample(prefix []int32, B, n int, opt SampleOptions) ([]int32, error) {
	if _, _, err := m.sampleSetup(prefix, B, n, opt); err != nil {
		return nil, err
	}
	s, err := newSampler(m, B, n)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Sample(prefix, n, opt)
}

// Sample is Model.Sample on the Sampler's batch (B = s.Batch(), n <= s.Len()),
// reusing its cache; it resets the Sampler.
func (s *Sampler) Sample(prefix []int32, n int, opt SampleOptions) ([]int32, error) {
	return s.SampleEach(prefix, n, opt, nil)
}

// SampleEach is Sample calling each (when not nil) after every position t
// it draws, with out [B,n] final up to position t in every sequence; so a
// caller can show tokens as they come (igpt serve streams them). An error
// from each stops the sampling and is returned.
func (s *Sampler) SampleEach(prefix []int32, n int, opt SampleOptions, each func(t int, out []int32) error) ([]int32, error) {
	B, V := s.batch, s.m.Config.Vocab
	P, out, err := s.m.sampleSetup(prefix, B, n, opt)
	if err != nil {
		return nil, err
	}
	if n > s.maxT {
		return nil, fmt.Errorf("model: sample length %d exceeds the sampler's %d", n, s.maxT)
	}
	tp := newTokenPicker(opt, V)
	rngs := sequenceRNGs(opt.Seed, B)
	logits := make([]float32, B*V) // [B,V]
	prev := make([]int32, B)       // [B] tokens at t-1
	if P == n {
		return out, nil
	}
	s.Reset()
	if P > 0 { // the known tokens at once: cache positions 0..P-1
		if err := s.Prefill(prefix); err != nil {
			return nil, err
		}
	}
	for t := P; t < n; t++ {
		if t > 0 {
			for b := range prev {
				prev[b] = out[b*n+t-1]
			}
		}
		if err := s.Step(prev, logits); err != nil {
			return nil, err
		}
		for b := 0; b < B; b++ {
			out[b*n+t] = tp.pick(logits[b*V:(b+1)*V], rngs[b])
		}
		if each != nil {
			if err := each(t, out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// SampleNaive is Sample without a cache, the baseline it is measured
// against: every new token runs the whole forward pass over the sequence
// so far (positions 0..t, the same layer code Forward and Evaluate run,
// the head at position t only), O(n²) positions in all. It draws the same
// tokens as Sample for the same options up to float32 rounding.
func (m *Model) SampleNaive(prefix []int32, B, n int, opt SampleOptions) ([]int32, error) {
	P, out, err := m.sampleSetup(prefix, B, n, opt)
	if err != nil {
		return nil, err
	}
	cfg, p := m.Config, m.Params
	C, H, V := cfg.D, cfg.Heads, cfg.Vocab
	tp := newTokenPicker(opt, V)
	rngs := sequenceRNGs(opt.Seed, B)
	ids := make([]int32, B*n)   // [B,T] inputs of the prefix t+1 = T
	h := make([]float32, B*n*C) // [B,T,C]
	blk := newBlockActs(B, n, C, H, true, FP32)
	last := make([]float32, B*C)   // [B,C] norm(h_L) at position t
	logits := make([]float32, B*V) // [B,V]
	for t := P; t < n; t++ {
		T := t + 1
		for b := 0; b < B; b++ {
			ids[b*T] = int32(V) // start-of-sequence vector
			copy(ids[b*T+1:(b+1)*T], out[b*n:b*n+t])
		}
		encoderForward(h, ids, p.WTE, p.WPE, B, T, C)
		for l := range p.Layers {
			blockForward(h, h, &p.Layers[l], nil, &blk, B, T, C, H, true)
		}
		for b := 0; b < B; b++ {
			copy(last[b*C:(b+1)*C], h[(b*T+t)*C:(b*T+T)*C])
		}
		rmsnormForward(last, nil, last, p.LNF, B, C)
		headForward(logits, last, p.LMHead, B, C, V)
		for b := 0; b < B; b++ {
			out[b*n+t] = tp.pick(logits[b*V:(b+1)*V], rngs[b])
		}
	}
	return out, nil
}
