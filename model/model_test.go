package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func maxAbs(x []float64) float64 {
	m := 0.0
	for _, v := range x {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// relErr is max|got − want| / max|want| (the error relative to the
// tensor's scale), with got in float32.
func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var d float64
	for i := range got {
		d = math.Max(d, math.Abs(float64(got[i])-want[i]))
	}
	s := maxAbs(want)
	if s == 0 {
		return d
	}
	return d / s
}

func testModel(t *testing.T, cfg Config, seed uint64, std float64) *Model {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	randomParams(m.Params, seed, std)
	return m
}

func objectives(rng *rand.Rand, B, T int) []struct {
	obj  Objective
	mask []bool
} {
	mask := BERTMask(rng, B, T, 0.3)
	mask[1] = true
	return []struct {
		obj  Objective
		mask []bool
	}{{AR, nil}, {BERT, mask}}
}

// TestForwardMatchesNaive checks logits, loss, every hidden state and the
// probe features of the float32 path (training Forward and forward-only
// Evaluate/Probe) against the naive float64 loops, on a random model with
// odd sizes.
func TestForwardMatchesNaive(t *testing.T) {
	cfg := Config{Layers: 3, D: 40, Heads: 5, Seq: 37, Vocab: 29}
	B := 3
	m := testModel(t, cfg, 1, 0.08)
	m.InferenceChunk = 2 * cfg.Seq // two chunks, the second partial
	ref := newNaive(m.Params)
	rng := rand.New(rand.NewPCG(2, 2))
	tokens := randomTokens(rng, B*cfg.Seq, cfg.Vocab)
	for _, o := range objectives(rng, B, cfg.Seq) {
		t.Run(o.obj.String(), func(t *testing.T) {
			loss, err := m.Forward(tokens, o.mask, o.obj)
			if err != nil {
				t.Fatal(err)
			}
			wantLoss, wantLogits, wantHidden := ref.forward(tokens, o.mask, o.obj)
			if d := math.Abs(loss-wantLoss) / wantLoss; d > 1e-5 {
				t.Errorf("loss %.8g, naive %.8g (rel %.2g)", loss, wantLoss, d)
			}
			if e := relErr(m.Logits(), wantLogits); e > 1e-5 {
				t.Errorf("logits rel err %.3g", e)
			}
			feats := make([]float32, (cfg.Layers+1)*B*cfg.D)
			if err := m.Probe(tokens, o.mask, o.obj, feats); err != nil {
				t.Fatal(err)
			}
			for l := 0; l <= cfg.Layers; l++ {
				if e := relErr(m.Hidden(l), wantHidden[l]); e > 1e-5 {
					t.Errorf("h_%d rel err %.3g", l, e)
				}
				want := naiveProbe(wantHidden[l], B, cfg.Seq, cfg.D)
				if e := relErr(m.ProbeFeatures(l, nil), want); e > 1e-5 {
					t.Errorf("probe features of layer %d (Forward) rel err %.3g", l, e)
				}
				if e := relErr(feats[l*B*cfg.D:(l+1)*B*cfg.D], want); e > 1e-5 {
					t.Errorf("probe features of layer %d (Probe) rel err %.3g", l, e)
				}
			}
			el, n, err := m.Evaluate(tokens, o.mask, o.obj)
			if err != nil {
				t.Fatal(err)
			}
			_, wantN := m.Loss()
			if math.Abs(el-loss) > 1e-5*loss || n != wantN {
				t.Errorf("Evaluate = %.8g over %d, Forward %.8g over %d", el, n, loss, wantN)
			}
		})
	}
}

// TestGradientsFiniteDifferences checks every entry of every parameter
// tensor's gradient (float32 Backward) against central differences of the
// naive float64 forward (eps 1e-5), for both objectives, at a tiny config.
// Tolerance per entry: |analytic − numeric| <= 2e-3·(|numeric|+|analytic|) +
// 2e-6·max|gradient of the tensor| (float32 rounding of the analytic side).
func TestGradientsFiniteDifferences(t *testing.T) {
	cfg := Config{Layers: 2, D: 16, Heads: 2, Seq: 7, Vocab: 11}
	B := 2
	m := testModel(t, cfg, 3, 0.3)
	rng := rand.New(rand.NewPCG(4, 4))
	tokens := randomTokens(rng, B*cfg.Seq, cfg.Vocab)
	for _, o := range objectives(rng, B, cfg.Seq) {
		t.Run(o.obj.String(), func(t *testing.T) {
			m.ZeroGrads()
			if _, err := m.Forward(tokens, o.mask, o.obj); err != nil {
				t.Fatal(err)
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			ref := newNaive(m.Params)
			const eps = 1e-5
			grads := m.Grads.Tensors()
			off := 0
			worst := 0.0
			for ti, pt := range m.Params.Tensors() {
				g := grads[ti].Data
				var gs float64
				for _, v := range g {
					gs = math.Max(gs, math.Abs(float64(v)))
				}
				bad := 0
				for i := range pt.Data {
					x := ref.data[off+i]
					ref.data[off+i] = x + eps
					lp, _, _ := ref.forward(tokens, o.mask, o.obj)
					ref.data[off+i] = x - eps
					lm, _, _ := ref.forward(tokens, o.mask, o.obj)
					ref.data[off+i] = x
					num, ana := (lp-lm)/(2*eps), float64(g[i])
					err := math.Abs(num - ana)
					tol := 2e-3*(math.Abs(num)+math.Abs(ana)) + 2e-6*gs
					worst = math.Max(worst, err/(math.Abs(num)+math.Abs(ana)+1e-12))
					if err > tol {
						if bad < 3 {
							t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", pt.Name, i, ana, num)
						}
						bad++
					}
				}
				if o.obj == AR && pt.Name == "transformer.wte.weight" {
					sos := g[cfg.Vocab*cfg.D : (cfg.Vocab+1)*cfg.D]
					if maxAbs(f64(sos)) == 0 {
						t.Error("AR: the start vector (wte row V) has a zero gradient")
					}
				}
				if gs == 0 && !(o.obj == BERT && pt.Name == "transformer.wte.weight") {
					t.Errorf("%s: gradient is all zero", pt.Name)
				}
				off += len(pt.Data)
			}
			t.Logf("%s: %d entries checked, worst relative error %.2g", o.obj, off, worst)
		})
	}
}

func f64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

func TestBERTNoMaskedPositions(t *testing.T) {
	cfg := Config{Layers: 1, D: 8, Heads: 2, Seq: 5, Vocab: 7}
	m := testModel(t, cfg, 5, 0.1)
	tokens := []int32{1, 2, 3, 4, 5}
	loss, err := m.Forward(tokens, make([]bool, 5), BERT)
	if err != nil || loss != 0 {
		t.Fatalf("loss %v, err %v; want 0", loss, err)
	}
	m.ZeroGrads()
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	for _, v := range m.Grads.Data {
		if v != 0 {
			t.Fatal("non-zero gradient with nothing masked")
		}
	}
}

func TestForwardErrors(t *testing.T) {
	cfg := Config{Layers: 1, D: 8, Heads: 2, Seq: 4, Vocab: 7}
	m := testModel(t, cfg, 5, 0.1)
	for _, c := range []struct {
		tokens []int32
		mask   []bool
		obj    Objective
	}{
		{[]int32{1, 2, 3}, nil, AR},
		{[]int32{1, 2, 3, 7}, nil, AR},
		{[]int32{1, 2, 3, -1}, nil, AR},
		{[]int32{1, 2, 3, 4}, []bool{true, false, false, false}, AR},
		{[]int32{1, 2, 3, 4}, nil, BERT},
	} {
		if _, err := m.Forward(c.tokens, c.mask, c.obj); err == nil {
			t.Errorf("Forward(%v, %v, %v): no error", c.tokens, c.mask, c.obj)
		}
	}
	if err := (&Model{Config: cfg}).Backward(); err == nil {
		t.Error("Backward without Forward: no error")
	}
}

// TestSteadyStateAllocs: a training step (Forward, Backward, Update) and the
// forward-only paths allocate nothing once warm.
func TestSteadyStateAllocs(t *testing.T) {
	for _, p := range []Precision{FP32, BF16} {
		t.Run(p.String(), func(t *testing.T) { steadyStateAllocs(t, p) })
	}
}

func steadyStateAllocs(t *testing.T, prec Precision) {
	cfg := Config{Layers: 2, D: 32, Heads: 4, Seq: 16, Vocab: 20}
	m := testModel(t, cfg, 6, 0.05)
	m.Precision = prec
	opt, err := NewOptimizer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opt.WeightDecay, opt.ClipNorm = 0.01, 1
	rng := rand.New(rand.NewPCG(7, 7))
	tokens := randomTokens(rng, 4*cfg.Seq, cfg.Vocab)
	mask := BERTMask(rng, 4, cfg.Seq, 0.15)
	feats := make([]float32, (cfg.Layers+1)*4*cfg.D)
	var probe []float32
	step := func() {
		for _, o := range []Objective{AR, BERT} {
			mk := mask
			if o == AR {
				mk = nil
			}
			m.Grads.Zero()
			if _, err := m.Forward(tokens, mk, o); err != nil {
				panic(err)
			}
			if err := m.Backward(); err != nil {
				panic(err)
			}
			if _, err := opt.Update(m.Params, m.Grads, 1e-3); err != nil {
				panic(err)
			}
			probe = m.ProbeFeatures(1, probe)
			if _, _, err := m.Evaluate(tokens, mk, o); err != nil {
				panic(err)
			}
			if err := m.Probe(tokens, mk, o, feats); err != nil {
				panic(err)
			}
		}
	}
	m.AllocGrads()
	step() // warm-up: workspaces and the pool's per-worker scratch grow here
	// AllocsPerRun counts every allocation of the process over the runs and
	// returns the whole-number average: a stray one (the runtime, a worker's
	// first wake on a loaded machine) averages to 0 over 100 steps, while an
	// allocation in the step itself happens every step and averages >= 1.
	if n := testing.AllocsPerRun(100, step); n >= 1 {
		t.Errorf("%v allocations per training step, want 0", n)
	}
}

func TestConfig(t *testing.T) {
	want := map[string]float64{"S": 76e6, "M": 455e6, "L": 1362e6, "XL": 6801e6}
	for name, n := range want {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		got := float64(c.NumParams())
		if math.Abs(got-n)/n > 0.01 {
			t.Errorf("%s: %.0f parameters, paper %.0f", name, got, n)
		}
	}
	for _, name := range []string{"nano", "micro"} {
		if _, err := Preset(name); err != nil {
			t.Error(err)
		}
	}
	if _, err := Preset("nope"); err == nil {
		t.Error("unknown preset: no error")
	}
	for _, c := range []Config{{0, 8, 2, 4, 5}, {1, 8, 3, 4, 5}, {1, 8, 2, 0, 5}, {1, 8, 2, 4, 0}} {
		if c.Validate() == nil {
			t.Errorf("%v: valid", c)
		}
	}
	// the FLOP count of torch_train_step.py for L4 d256 T256: 22.81M / 7.60M per token
	fwd, train := Config{Layers: 4, D: 256, Heads: 8, Seq: 256, Vocab: 512}.FLOPsPerToken(256)
	if got := fmt.Sprintf("%.2f %.2f", train/1e6, fwd/1e6); got != "22.81 7.60" {
		t.Errorf("FLOPs/token train, fwd = %s M, want 22.81 7.60", got)
	}
}

// TestInit checks the initialisation's statistics.
func TestInit(t *testing.T) {
	cfg := Config{Layers: 8, D: 64, Heads: 4, Seq: 32, Vocab: 50}
	p, _ := NewParams(cfg)
	p.Init(1)
	std := func(x []float32) float64 {
		var s float64
		for _, v := range x {
			s += float64(v) * float64(v)
		}
		return math.Sqrt(s / float64(len(x)))
	}
	for _, c := range []struct {
		name string
		x    []float32
		want float64
	}{
		{"wte", p.WTE, 0.02}, {"wpe", p.WPE, 0.02}, {"c_attn", p.Layers[3].CAttn, 0.02}, {"c_fc", p.Layers[0].FC, 0.02},
		{"attn.c_proj", p.Layers[1].AttnProj, 0.02 / 4}, {"mlp.c_proj", p.Layers[7].MLPProj, 0.02 / 4},
	} {
		if s := std(c.x); math.Abs(s-c.want)/c.want > 0.05 {
			t.Errorf("%s: std %.4g, want %.4g", c.name, s, c.want)
		}
	}
	for _, v := range p.LMHead {
		if v != 0 {
			t.Fatal("lm_head not zero")
		}
	}
	for _, v := range append(append([]float32{}, p.LNF...), p.Layers[2].LN2...) {
		if v != 1 {
			t.Fatal("gain not 1")
		}
	}
	q, _ := NewParams(cfg)
	q.Init(1)
	for i := range q.Data {
		if q.Data[i] != p.Data[i] {
			t.Fatal("Init is not deterministic")
		}
	}
}

// TestProbeGridMatchesNaive checks the features pooled over a grid of
// regions against naiveProbeGrid on a 5×7 token grid (regions of unequal
// sizes), for n = 1 (equal to Probe), 2 (quadrants), 3 and 5 (rows).
func TestProbeGridMatchesNaive(t *testing.T) {
	gh, gw := 5, 7
	cfg := Config{Layers: 2, D: 24, Heads: 3, Seq: gh * gw, Vocab: 19}
	B := 3
	m := testModel(t, cfg, 3, 0.08)
	ref := newNaive(m.Params)
	rng := rand.New(rand.NewPCG(4, 4))
	tokens := randomTokens(rng, B*cfg.Seq, cfg.Vocab)
	_, _, hidden := ref.forward(tokens, nil, AR)
	for _, n := range []int{1, 2, 3, 5} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			R := max(n, 1) * max(n, 1)
			feats := make([]float32, (cfg.Layers+1)*B*R*cfg.D)
			if err := m.ProbeGrid(tokens, nil, AR, feats, Pool{H: gh, W: gw, N: n}); err != nil {
				t.Fatal(err)
			}
			for l := 0; l <= cfg.Layers; l++ {
				want := naiveProbeGrid(hidden[l], B, gh, gw, n, cfg.D)
				if e := relErr(feats[l*B*R*cfg.D:(l+1)*B*R*cfg.D], want); e > 1e-5 {
					t.Errorf("layer %d: rel err %.3g", l, e)
				}
			}
		})
	}
	for _, bad := range []Pool{{H: 5, W: 6, N: 2}, {H: 5, W: 7, N: 6}} {
		if err := m.ProbeGrid(tokens, nil, AR, make([]float32, 1<<16), bad); err == nil {
			t.Errorf("pool %+v accepted for a 5x7 grid", bad)
		}
	}
}
