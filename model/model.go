package model

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/igpt/igpt/internal/kernels"
)

// Objective selects the training objective.
type Objective int

const (
	// AR is the autoregressive objective: input [sos, x0 … x_{T-2}] + wpe,
	// causal attention, loss = mean cross-entropy of x_t at every position.
	AR Objective = iota
	// BERT is the masked objective: input emb(x_t) + wpe with the masked
	// positions' embeddings zeroed, no attention mask, loss = mean
	// cross-entropy over the masked positions only (0 when none is masked).
	BERT
)

func (o Objective) String() string {
	switch o {
	case AR:
		return "ar"
	case BERT:
		return "bert"
	}
	return fmt.Sprintf("Objective(%d)", int(o))
}

// ParseObjective parses "ar" or "bert".
func ParseObjective(s string) (Objective, error) {
	switch s {
	case "ar", "AR":
		return AR, nil
	case "bert", "BERT":
		return BERT, nil
	}
	return 0, fmt.Errorf("model: unknown objective %q (want ar or bert)", s)
}

// BERTMaskProb is the paper's masking probability.
const BERTMaskProb = 0.15

// BERTMask draws a mask [B,T] with each position masked (true) independently
// with probability p.
func BERTMask(rng *rand.Rand, B, T int, p float64) []bool {
	m := make([]bool, B*T)
	FillBERTMask(m, rng, p)
	return m
}

// FillBERTMask is BERTMask into an existing slice (no allocation).
func FillBERTMask(mask []bool, rng *rand.Rand, p float64) {
	for i := range mask {
		mask[i] = rng.Float64() < p
	}
}

// Model is an iGPT transformer with its parameters, gradients and
// workspaces. The training workspace (activations for one batch [B,T]) and
// the forward-only workspace are allocated on first use and reused: a
// steady-state Forward, Backward, Evaluate or Probe does not allocate. A
// Model is not safe for concurrent use; the kernels use the
// internal/kernels worker pool (kernels.SetThreads).
type Model struct {
	Config Config
	Params *Params
	Grads  *Params // nil until the first Backward (or AllocGrads)

	// InferenceChunk is the number of tokens the forward-only path
	// (Evaluate, Probe) processes at once (whole sequences, at least one):
	// its memory is bounded by this, whatever the batch. Default 4096.
	InferenceChunk int

	// Precision of the training step's linear layers (Forward, Backward):
	// FP32 (default) or BF16. The forward-only path is fp32.
	Precision Precision

	acts *activations
	inf  *activations
	w16  []layerBF16 // bf16 weights of the last BF16 Forward
}

// New returns a model with zeroed parameters (call Params.Init, or load a
// checkpoint).
func New(cfg Config) (*Model, error) {
	p, err := NewParams(cfg)
	if err != nil {
		return nil, err
	}
	return FromParams(p), nil
}

// FromParams wraps existing parameters (not copied).
func FromParams(p *Params) *Model {
	return &Model{Config: p.Config, Params: p, InferenceChunk: 4096}
}

// AllocGrads allocates the gradient buffer (zeroed) if it is missing.
func (m *Model) AllocGrads() {
	if m.Grads == nil {
		g, err := NewParams(m.Config)
		if err != nil {
			panic(err) // the config was validated when the model was made
		}
		m.Grads = g
	}
}

// ZeroGrads sets the gradients to 0 (allocating them if needed).
func (m *Model) ZeroGrads() {
	m.AllocGrads()
	m.Grads.Zero()
}

// activations is a workspace for batches of up to B sequences of T tokens.
type activations struct {
	B, T      int
	inference bool
	prec      Precision // the training workspace's (its buffers differ)

	ids     []int32   // [B*T] input ids: wte row per position (V = sos, -1 = zero)
	targets []int32   // [B*T] target per position (-1 = not counted)
	pos     []int32   // [B*T] position t of each row
	hidden  []float32 // [L+1, B, T, C] h_0 … h_L (training); [B, T, C] (forward-only)
	blocks  []blockActs
	lnf     []float32 // [N, C]
	lnfRstd []float32 // [N]
	logits  []float32 // [N, V]

	// w16 is the bf16 weights the last Forward used (nil: fp32); Backward
	// uses the same.
	w16 []layerBF16

	// backward only
	dlogits []float32 // [N, V]
	dres    []float32 // [N, C]
	scratch blockScratch
	acc     []float64 // [C] probe accumulator

	// the last forward pass
	b      int
	obj    Objective
	valid  bool
	loss   float64
	counts int
}

func newActivations(cfg Config, B, T int, inference bool, prec Precision) *activations {
	L, C, H, V := cfg.Layers, cfg.D, cfg.Heads, cfg.Vocab
	N := B * T
	a := &activations{B: B, T: T, inference: inference,
		ids: make([]int32, N), targets: make([]int32, N), pos: make([]int32, N),
		lnf: make([]float32, N*C), lnfRstd: make([]float32, N), logits: make([]float32, N*V),
		acc: make([]float64, C),
	}
	for n := range a.pos {
		a.pos[n] = int32(n % T)
	}
	if inference {
		a.hidden = make([]float32, N*C)
		a.blocks = []blockActs{newBlockActs(B, T, C, H, true, FP32)}
		return a
	}
	a.hidden = make([]float32, (L+1)*N*C)
	a.blocks = make([]blockActs, L)
	for l := range a.blocks {
		a.blocks[l] = newBlockActs(B, T, C, H, false, prec)
	}
	a.prec = prec
	a.dlogits = make([]float32, N*V)
	a.dres = make([]float32, N*C)
	a.scratch = blockScratch{big: make([]float32, N*4*C), datty: make([]float32, N*C), dln: make([]float32, N*C)}
	if prec == BF16 {
		a.scratch.d16 = make([]uint16, N*4*C)
	}
	return a
}

// layerW16 is layer l's bf16 weights, nil in fp32.
func layerW16(w16 []layerBF16, l int) *layerBF16 {
	if w16 == nil {
		return nil
	}
	return &w16[l]
}

// h returns h_l of the first b sequences (training workspace).
func (a *activations) h(l, b, C int) []float32 {
	n := a.B * a.T * C
	return a.hidden[l*n : l*n+b*a.T*C]
}

// Reserve allocates the training workspace (for m.Precision) for batches of up to B
// sequences of T <= Config.Seq tokens. Forward calls it itself (with T =
// Config.Seq) when no workspace fits.
func (m *Model) Reserve(B, T int) error {
	if B < 1 || T < 1 || T > m.Config.Seq {
		return fmt.Errorf("model: reserve B=%d T=%d: want B >= 1 and 1 <= T <= %d", B, T, m.Config.Seq)
	}
	m.acts = newActivations(m.Config, B, T, false, m.Precision)
	return nil
}

// prepare checks a batch and fills ids and targets for the objective.
func (m *Model) prepare(a *activations, tokens []int32, mask []bool, obj Objective) (int, error) {
	T, V := a.T, m.Config.Vocab
	if len(tokens) == 0 || len(tokens)%T != 0 {
		return 0, fmt.Errorf("model: %d tokens are not whole sequences of T=%d", len(tokens), T)
	}
	b := len(tokens) / T
	if b > a.B {
		return 0, fmt.Errorf("model: batch of %d sequences exceeds the workspace's %d", b, a.B)
	}
	switch obj {
	case AR:
		if mask != nil {
			return 0, errors.New("model: a BERT mask was given for the AR objective")
		}
	case BERT:
		if len(mask) != len(tokens) {
			return 0, fmt.Errorf("model: BERT mask has %d entries for %d tokens", len(mask), len(tokens))
		}
	default:
		return 0, fmt.Errorf("model: unknown objective %v", obj)
	}
	for n, x := range tokens {
		if x < 0 || int(x) >= V {
			return 0, fmt.Errorf("model: token %d at [%d,%d] out of range [0,%d)", x, n/T, n%T, V)
		}
		a.targets[n] = x
		if obj == AR {
			if n%T == 0 {
				a.ids[n] = int32(V) // start-of-sequence vector
			} else {
				a.ids[n] = tokens[n-1]
			}
			continue
		}
		a.ids[n] = x
		if mask[n] {
			a.ids[n] = -1 // zeroed input embedding
		} else {
			a.targets[n] = -1 // loss only on masked positions
		}
	}
	return b, nil
}

// Forward runs the model on tokens [b,T] (b <= the workspace's B; T is the
// workspace's, Config.Seq by default) for the objective, keeping every
// activation for Backward, and returns the loss (nats per counted token).
// mask [b,T] (true = masked) is required for BERT and must be nil for AR.
// Afterwards Logits, Hidden and ProbeFeatures read the results.
func (m *Model) Forward(tokens []int32, mask []bool, obj Objective) (float64, error) {
	if a := m.acts; a != nil && a.prec != m.Precision {
		if err := m.Reserve(a.B, a.T); err != nil { // the same shape, the precision's buffers
			return 0, err
		}
	}
	if m.acts == nil || (m.acts.T == m.Config.Seq && len(tokens) > m.acts.B*m.acts.T) {
		if err := m.Reserve(max(1, len(tokens)/m.Config.Seq), m.Config.Seq); err != nil {
			return 0, err
		}
	}
	a := m.acts
	a.valid = false
	b, err := m.prepare(a, tokens, mask, obj)
	if err != nil {
		return 0, err
	}
	cfg, p := m.Config, m.Params
	T, C, H, V, L := a.T, cfg.D, cfg.Heads, cfg.Vocab, cfg.Layers
	N := b * T
	causal := obj == AR
	a.w16 = nil
	if m.Precision == BF16 {
		a.w16 = m.weightsBF16()
	}
	encoderForward(a.h(0, b, C), a.ids, p.WTE, p.WPE, b, T, C)
	for l := 0; l < L; l++ {
		blockForward(a.h(l+1, b, C), a.h(l, b, C), &p.Layers[l], layerW16(a.w16, l), &a.blocks[l], b, T, C, H, causal)
	}
	rmsnormForward(a.lnf, a.lnfRstd, a.h(L, b, C), p.LNF, N, C)
	headForward(a.logits, a.lnf, p.LMHead, N, C, V)
	a.loss, a.counts = kernels.SoftmaxCrossEntropy(nil, a.logits[:N*V], a.targets[:N], V)
	a.b, a.obj, a.valid = b, obj, true
	return a.loss, nil
}

// Loss returns the loss of the last Forward and the number of positions it
// averages over (b·T for AR, the masked count for BERT).
func (m *Model) Loss() (float64, int) {
	if m.acts == nil || !m.acts.valid {
		return 0, 0
	}
	return m.acts.loss, m.acts.counts
}

// Logits returns the logits [b,T,V] of the last Forward (a view into the
// workspace, overwritten by the next Forward).
func (m *Model) Logits() []float32 {
	a := m.acts
	if a == nil || !a.valid {
		return nil
	}
	return a.logits[:a.b*a.T*m.Config.Vocab]
}

// Hidden returns h_l [b,T,d] of the last Forward, 0 <= l <= L: h_0 is the
// input embedding plus wpe, h_l the output of block l, all before any norm
// (Hugging Face's output_hidden_states). A view into the workspace.
func (m *Model) Hidden(l int) []float32 {
	a := m.acts
	if a == nil || !a.valid || l < 0 || l > m.Config.Layers {
		return nil
	}
	return a.h(l, a.b, m.Config.D)
}

// ProbeFeatures returns the linear-probe features of layer l (0 <= l <= L)
// of the last Forward: [b,d], the mean over positions of norm(h_l) with gain
// 1. dst is reused if it is large enough.
func (m *Model) ProbeFeatures(l int, dst []float32) []float32 {
	a := m.acts
	h := m.Hidden(l)
	if h == nil {
		return nil
	}
	C := m.Config.D
	if cap(dst) < a.b*C {
		dst = make([]float32, a.b*C)
	}
	dst = dst[:a.b*C]
	probeFeatures(dst, h, a.acc, a.b, a.T, C)
	return dst
}

// FinalNormed returns n_L [b,T,d] of the last Forward: the final hidden
// state after the final norm and its gain, what the LM head (and a
// ClassHead) reads. A view into the workspace.
func (m *Model) FinalNormed() []float32 {
	a := m.acts
	if a == nil || !a.valid {
		return nil
	}
	return a.lnf[:a.b*a.T*m.Config.D]
}

// Backward computes the gradient of the last Forward's loss and adds it to
// Grads (allocated, zeroed, on first use; call ZeroGrads between steps).
func (m *Model) Backward() error { return m.BackwardWith(1, nil) }

// BackwardWith is Backward for genWeight times the loss plus a second loss
// on FinalNormed whose gradient dFinal [b,T,d] the caller gives (a
// ClassHead's): it is added to the LM head's before the final norm's
// backward pass. nil adds nothing; genWeight 0 skips the LM head.
func (m *Model) BackwardWith(genWeight float32, dFinal []float32) error {
	a := m.acts
	if a == nil || !a.valid {
		return errors.New("model: Backward without a preceding Forward")
	}
	m.AllocGrads()
	cfg, p, g := m.Config, m.Params, m.Grads
	b, T, C, H, V, L := a.b, a.T, cfg.D, cfg.Heads, cfg.Vocab, cfg.Layers
	N := b * T
	causal := a.obj == AR
	dres, dln := a.dres[:N*C], a.scratch.dln[:N*C]
	if genWeight != 0 {
		kernels.SoftmaxCrossEntropy(a.dlogits[:N*V], a.logits[:N*V], a.targets[:N], V)
		if genWeight != 1 {
			for i, v := range a.dlogits[:N*V] {
				a.dlogits[i] = v * genWeight
			}
		}
		headBackward(dln, g.LMHead, a.dlogits, a.lnf, p.LMHead, N, C, V)
	} else {
		clear(dln)
	}
	if dFinal != nil {
		if len(dFinal) != N*C {
			return fmt.Errorf("model: BackwardWith: %d gradient values for the final state [%d,%d,%d]", len(dFinal), b, T, C)
		}
		for i, v := range dFinal {
			dln[i] += v
		}
	}
	clear(dres)
	rmsnormBackward(dres, g.LNF, dln, a.h(L, b, C), p.LNF, a.lnfRstd, N, C)
	for l := L - 1; l >= 0; l-- {
		blockBackward(dres, a.h(l, b, C), &p.Layers[l], &g.Layers[l], layerW16(a.w16, l), &a.blocks[l], &a.scratch, b, T, C, H, causal)
	}
	encoderBackward(g.WTE, g.WPE, dres, a.ids[:N], a.pos[:N], C)
	return nil
}

// inference returns the forward-only workspace.
func (m *Model) inference() *activations {
	T := m.Config.Seq
	chunk := max(1, m.InferenceChunk/T)
	if m.inf == nil || m.inf.B != chunk {
		m.inf = newActivations(m.Config, chunk, T, true, FP32)
	}
	return m.inf
}

// Evaluate computes the loss of tokens [B, Config.Seq] (any B) without
// keeping activations for a backward pass: it returns the mean loss and the
// number of positions counted (B·T for AR, masked positions for BERT).
func (m *Model) Evaluate(tokens []int32, mask []bool, obj Objective) (float64, int, error) {
	return m.inferForward(tokens, mask, obj, inferOut{loss: true})
}

// PooledFinal computes, forward-only, the mean over positions of the final
// normalised state n_L for tokens [B, Config.Seq] (any B) into pooled
// [B,d]: a ClassHead's input. It also returns the generative loss and the
// positions it counts, as Evaluate does.
func (m *Model) PooledFinal(tokens []int32, mask []bool, obj Objective, pooled []float32) (float64, int, error) {
	if B := len(tokens) / m.Config.Seq; len(pooled) < B*m.Config.D {
		return 0, 0, fmt.Errorf("model: pooled features need %d values ([B,d]), got %d", B*m.Config.D, len(pooled))
	}
	return m.inferForward(tokens, mask, obj, inferOut{loss: true, pooled: pooled})
}

// Probe computes the linear-probe features of every layer for tokens
// [B, Config.Seq] (any B) in a forward-only pass whose memory does not grow
// with B: feats [L+1, B, d] receives, for each layer l, the mean over
// positions of norm(h_l) with gain 1. The head is not run.
func (m *Model) Probe(tokens []int32, mask []bool, obj Objective, feats []float32) error {
	return m.ProbeGrid(tokens, mask, obj, feats, Pool{})
}

// Pool says where the probe features are pooled: over the whole sequence
// (N ≤ 1, the paper's mean over positions), or over an N×N grid of regions
// of the H×W token grid (H·W = Seq), each region's mean kept: N·N·d
// features per layer, region-major.
type Pool struct{ H, W, N int }

// Regions is the number of pooled regions: N·N, or 1.
func (p Pool) Regions() int { return max(p.N, 1) * max(p.N, 1) }

// Check refuses a grid that does not fit a sequence of seq tokens.
func (p Pool) Check(seq int) error {
	if p.N <= 1 {
		return nil
	}
	if p.H*p.W != seq {
		return fmt.Errorf("model: probe pooling over a %dx%d token grid, but the model reads %d tokens", p.H, p.W, seq)
	}
	if p.N > p.H || p.N > p.W {
		return fmt.Errorf("model: probe pooling over a %dx%d grid of regions of a %dx%d token grid: a region would be empty", p.N, p.N, p.H, p.W)
	}
	return nil
}

// ProbeGrid is Probe with the features pooled as pool says: feats
// [L+1, B, pool.Regions()·d].
func (m *Model) ProbeGrid(tokens []int32, mask []bool, obj Objective, feats []float32, pool Pool) error {
	T, C := m.Config.Seq, m.Config.D
	if err := pool.Check(T); err != nil {
		return err
	}
	B := len(tokens) / T
	if want := (m.Config.Layers + 1) * B * pool.Regions() * C; len(feats) < want {
		return fmt.Errorf("model: probe features need %d values ([L+1,B,%d·d]), got %d", want, pool.Regions(), len(feats))
	}
	_, _, err := m.inferForward(tokens, mask, obj, inferOut{feats: feats, pool: pool})
	return err
}

// inferOut is what a forward-only pass computes besides the activations:
// the loss, probe features [L+1,B,d], pooled final states [B,d].
type inferOut struct {
	loss          bool
	feats, pooled []float32
	pool          Pool // where feats are pooled
}

func (m *Model) inferForward(tokens []int32, mask []bool, obj Objective, out inferOut) (float64, int, error) {
	cfg, p := m.Config, m.Params
	T, C, H, V, L := cfg.Seq, cfg.D, cfg.Heads, cfg.Vocab, cfg.Layers
	if len(tokens) == 0 || len(tokens)%T != 0 {
		return 0, 0, fmt.Errorf("model: %d tokens are not whole sequences of T=%d", len(tokens), T)
	}
	if obj == BERT && len(mask) != len(tokens) {
		return 0, 0, fmt.Errorf("model: BERT mask has %d entries for %d tokens", len(mask), len(tokens))
	}
	if obj == AR && mask != nil {
		return 0, 0, errors.New("model: a BERT mask was given for the AR objective")
	}
	B := len(tokens) / T
	a := m.inference()
	var acc []float64
	var cnt []int
	if out.pool.N > 1 {
		acc, cnt = make([]float64, out.pool.Regions()*C), make([]int, out.pool.Regions())
	}
	var sum float64
	var count int
	for b0 := 0; b0 < B; b0 += a.B {
		b := min(a.B, B-b0)
		var mk []bool
		if obj == BERT {
			mk = mask[b0*T : (b0+b)*T]
		}
		if _, err := m.prepare(a, tokens[b0*T:(b0+b)*T], mk, obj); err != nil {
			return 0, 0, fmt.Errorf("sequences %d..%d: %w", b0, b0+b, err)
		}
		N := b * T
		h := a.hidden[:N*C]
		encoderForward(h, a.ids, p.WTE, p.WPE, b, T, C)
		for l := 0; l <= L; l++ {
			if l > 0 {
				blockForward(h, h, &p.Layers[l-1], nil, &a.blocks[0], b, T, C, H, obj == AR)
			}
			if out.feats != nil && out.pool.N > 1 {
				R := out.pool.Regions()
				probeFeaturesGrid(out.feats[(l*B+b0)*R*C:(l*B+b0+b)*R*C], h, acc, cnt, b, out.pool.H, out.pool.W, out.pool.N, C)
			} else if out.feats != nil {
				probeFeatures(out.feats[(l*B+b0)*C:(l*B+b0+b)*C], h, a.acc, b, T, C)
			}
		}
		if out.loss {
			rmsnormForward(a.lnf, a.lnfRstd, h, p.LNF, N, C)
			if out.pooled != nil {
				meanPool(out.pooled[b0*C:(b0+b)*C], a.lnf[:N*C], b, T, C)
			}
			headForward(a.logits, a.lnf, p.LMHead, N, C, V)
			l, n := kernels.SoftmaxCrossEntropy(nil, a.logits[:N*V], a.targets[:N], V)
			sum += l * float64(n)
			count += n
		}
	}
	if count == 0 {
		return 0, 0, nil
	}
	return sum / float64(count), count, nil
}
