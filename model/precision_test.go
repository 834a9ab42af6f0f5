package model

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/kernels"
)

// bf16Tol is the tolerance of a BF16 quantity against its FP32 value,
// relative to the quantity's largest magnitude. One bf16 product has error
// <= c·2^-8·Σ|a||b| with c < 2.07 (internal/kernels, bf16_test.go); the
// logits pass through 4L of them, a weight gradient through up to 8L+2
// (forward to the loss, then back, where the output gradient is rounded
// too). Relative to the result rather than to Σ|a||b| this is a rule of
// thumb, not a proof (random-sign sums cancel; the errors are not all
// worst case and do not all add): 2.07·2^-8 per product on the longest
// path. Measured: about a tenth of it.
func bf16Tol(products int) float64 { return 2.07 * math.Ldexp(1, -8) * float64(products) }

// TestBF16MatchesFP32 runs Forward and Backward of one random model with
// odd sizes in FP32 and in BF16 and checks the loss, the logits and every
// parameter's gradient of BF16 against FP32 within bf16Tol (and far closer
// than that in the aggregate: the cosine of each gradient > 0.999). The
// FP32 gradients themselves are checked against finite differences by
// TestGradientsFiniteDifferences, which runs in FP32 as before.
func TestBF16MatchesFP32(t *testing.T) {
	cfg := Config{Layers: 2, D: 40, Heads: 5, Seq: 37, Vocab: 29}
	B := 3
	m := testModel(t, cfg, 21, 0.08)
	rng := rand.New(rand.NewPCG(22, 22))
	tokens := randomTokens(rng, B*cfg.Seq, cfg.Vocab)
	for _, o := range objectives(rng, B, cfg.Seq) {
		t.Run(o.obj.String(), func(t *testing.T) {
			run := func(p Precision) (float64, []float32, []float32) {
				m.Precision = p
				m.ZeroGrads()
				loss, err := m.Forward(tokens, o.mask, o.obj)
				if err != nil {
					t.Fatal(err)
				}
				logits := append([]float32(nil), m.Logits()...)
				if err := m.Backward(); err != nil {
					t.Fatal(err)
				}
				return loss, logits, append([]float32(nil), m.Grads.Data...)
			}
			l32, lg32, g32 := run(FP32)
			l16, lg16, g16 := run(BF16)
			m.Precision = FP32
			L := cfg.Layers
			if d := math.Abs(l16-l32) / l32; d > bf16Tol(4*L) {
				t.Errorf("loss bf16 %.6g, fp32 %.6g: rel %.3g > %.3g", l16, l32, d, bf16Tol(4*L))
			}
			if e := relErr(lg16, f64(lg32)); e > bf16Tol(4*L) || e == 0 {
				t.Errorf("logits: rel err %.3g, want in (0, %.3g]", e, bf16Tol(4*L))
			}
			off, worst := 0, 0.0
			for _, pt := range m.Params.Tensors() {
				n := len(pt.Data)
				a, b := g16[off:off+n], g32[off:off+n]
				off += n
				if maxAbs(f64(b)) == 0 {
					continue // the BERT start vector
				}
				e := relErr(a, f64(b))
				worst = math.Max(worst, e)
				if e > bf16Tol(8*L+2) {
					t.Errorf("%s: gradient rel err %.3g > %.3g", pt.Name, e, bf16Tol(8*L+2))
				}
				if c := cosine(a, b); c < 0.999 {
					t.Errorf("%s: gradient cosine %.5f < 0.999", pt.Name, c)
				}
			}
			t.Logf("%s: loss fp32 %.6f bf16 %.6f; logits rel err %.2g; worst gradient rel err %.2g (bound %.2g)",
				o.obj, l32, l16, relErr(lg16, f64(lg32)), worst, bf16Tol(8*L+2))
		})
	}
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		ab, aa, bb = ab+x*y, aa+x*x, bb+y*y
	}
	return ab / math.Sqrt(aa*bb)
}

// TestBF16TrainingTracksFP32 trains two copies of a model for 30 Adam
// steps on the same batches, one in FP32 and one in BF16, and checks that
// the BF16 loss tracks the FP32 one (within 2% at every step) and falls
// as far.
func TestBF16TrainingTracksFP32(t *testing.T) {
	cfg := Config{Layers: 2, D: 64, Heads: 4, Seq: 32, Vocab: 16}
	const B, steps = 4, 30
	rng := rand.New(rand.NewPCG(23, 23))
	batches := make([][]int32, 4)
	for i := range batches {
		// a learnable sequence: each token is the previous one plus a
		// per-batch step, mod V, with noise
		x := make([]int32, B*cfg.Seq)
		for n := range x {
			if n%cfg.Seq == 0 || rng.IntN(8) == 0 {
				x[n] = int32(rng.IntN(cfg.Vocab))
			} else {
				x[n] = (x[n-1] + int32(i+1)) % int32(cfg.Vocab)
			}
		}
		batches[i] = x
	}
	train := func(p Precision) []float64 {
		m := testModel(t, cfg, 24, 0.05)
		m.Precision = p
		opt, err := NewOptimizer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var losses []float64
		for s := 0; s < steps; s++ {
			m.ZeroGrads()
			loss, err := m.Forward(batches[s%len(batches)], nil, AR)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			if _, err := opt.Update(m.Params, m.Grads, 3e-3); err != nil {
				t.Fatal(err)
			}
			losses = append(losses, loss)
		}
		return losses
	}
	l32, l16 := train(FP32), train(BF16)
	for s := range l32 {
		if d := math.Abs(l16[s]-l32[s]) / l32[s]; d > 0.02 {
			t.Errorf("step %d: loss bf16 %.5f, fp32 %.5f (rel %.3g > 0.02)", s, l16[s], l32[s], d)
		}
	}
	if l32[steps-1] > 0.8*l32[0] || l16[steps-1] > 0.8*l16[0] {
		t.Errorf("losses did not fall: fp32 %.4f -> %.4f, bf16 %.4f -> %.4f", l32[0], l32[steps-1], l16[0], l16[steps-1])
	}
	t.Logf("loss fp32 %.4f -> %.4f, bf16 %.4f -> %.4f (bf16 kernels: %s)", l32[0], l32[steps-1], l16[0], l16[steps-1], kernels.BF16Path())
}

// TestBF16WeightsOncePerForward: the bf16 weights follow the fp32 masters
// (an update between steps is seen by the next Forward), and a Backward
// uses the weights of its own Forward.
func TestBF16WeightsOncePerForward(t *testing.T) {
	cfg := Config{Layers: 1, D: 16, Heads: 2, Seq: 8, Vocab: 11}
	m := testModel(t, cfg, 25, 0.1)
	m.Precision = BF16
	tokens := randomTokens(rand.New(rand.NewPCG(26, 26)), 2*cfg.Seq, cfg.Vocab)
	if _, err := m.Forward(tokens, nil, AR); err != nil {
		t.Fatal(err)
	}
	w := m.Params.Layers[0].FC
	if got, want := m.w16[0].fc[5], kernels.RoundBF16(w[5]); got != want {
		t.Fatalf("bf16 weight %#04x, want %#04x", got, want)
	}
	w[5] += 0.5
	if _, err := m.Forward(tokens, nil, AR); err != nil {
		t.Fatal(err)
	}
	if got, want := m.w16[0].fc[5], kernels.RoundBF16(w[5]); got != want {
		t.Fatalf("after an update: bf16 weight %#04x, want %#04x", got, want)
	}
	m.Precision = FP32 // a Backward after a BF16 Forward stays BF16
	m.ZeroGrads()
	if err := m.Backward(); err != nil || m.acts.w16 == nil {
		t.Fatalf("Backward: err %v, bf16 weights %v", err, m.acts.w16 != nil)
	}
}

func TestParsePrecision(t *testing.T) {
	for s, want := range map[string]Precision{"": FP32, "fp32": FP32, "bf16": BF16, "BF16": BF16} {
		if p, err := ParsePrecision(s); err != nil || p != want {
			t.Errorf("ParsePrecision(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePrecision("fp16"); err == nil || !strings.Contains(err.Error(), "fp32 or bf16") {
		t.Errorf("fp16: %v", err)
	}
	if err := BF16.Check(); (err == nil) != kernels.HasBF16() {
		t.Errorf("BF16.Check() = %v with HasBF16 %v", err, kernels.HasBF16())
	}
	if err := FP32.Check(); err != nil {
		t.Error(err)
	}
}
