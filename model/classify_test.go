package model

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// naiveJoint is the fine-tuning objective in float64 loops: the naive
// model's generative loss plus the mean cross-entropy of a linear head W
// [K,C], bias [K] on the mean over positions of rmsnorm(h_L)·g.
func naiveJoint(n *naive, tokens []int32, mask []bool, obj Objective, genWeight float64, w, bias []float64, labels []int32) float64 {
	gen, _, hidden := n.forward(tokens, mask, obj)
	C, T, K := n.cfg.D, n.cfg.Seq, len(bias)
	B := len(tokens) / T
	var cls float64
	for b := range B {
		f := make([]float64, C)
		for t := range T {
			x := naiveRMS(hidden[n.cfg.Layers][(b*T+t)*C:(b*T+t+1)*C], n.lnf)
			for c := range C {
				f[c] += x[c] / float64(T)
			}
		}
		lg := make([]float64, K)
		mx := math.Inf(-1)
		for k := range K {
			lg[k] = bias[k]
			for c := range C {
				lg[k] += f[c] * w[k*C+c]
			}
			mx = math.Max(mx, lg[k])
		}
		var z float64
		for _, v := range lg {
			z += math.Exp(v - mx)
		}
		cls += mx + math.Log(z) - lg[labels[b]]
	}
	return genWeight*gen + cls/float64(B)
}

// TestClassHeadGradients checks the joint loss's gradient (Model.Forward,
// ClassHead.Forward/Backward, Model.BackwardWith) against central finite
// differences of naiveJoint, for every parameter of the model and head,
// under both objectives and generative-loss weights 1, 0.5 and 0.
func TestClassHeadGradients(t *testing.T) {
	cfg := Config{Layers: 2, D: 12, Heads: 2, Seq: 6, Vocab: 9}
	B, K := 3, 4
	m := testModel(t, cfg, 5, 0.3)
	head := NewClassHead(cfg.D, K, 1)
	rng := rand.New(rand.NewPCG(6, 6))
	for i := range head.W {
		head.W[i] = float32(rng.NormFloat64() * 0.5)
	}
	for i := range head.Bias {
		head.Bias[i] = float32(rng.NormFloat64() * 0.1)
	}
	tokens := randomTokens(rng, B*cfg.Seq, cfg.Vocab)
	labels := []int32{2, 0, 3}
	objs := objectives(rng, B, cfg.Seq)
	for _, c := range []struct {
		o         int // index into objs
		genWeight float32
	}{{0, 1}, {1, 1}, {1, 0.5}, {0, 0}} {
		o := objs[c.o]
		t.Run(fmt.Sprintf("%s/gen_weight=%v", o.obj, c.genWeight), func(t *testing.T) {
			m.ZeroGrads()
			head.ZeroGrads()
			if _, err := m.Forward(tokens, o.mask, o.obj); err != nil {
				t.Fatal(err)
			}
			if _, _, err := head.Forward(m.FinalNormed(), labels, B, cfg.Seq); err != nil {
				t.Fatal(err)
			}
			dx := make([]float32, B*cfg.Seq*cfg.D)
			head.Backward(dx, 1, cfg.Seq)
			if err := m.BackwardWith(c.genWeight, dx); err != nil {
				t.Fatal(err)
			}
			ref := newNaive(m.Params)
			hw, hb := f64(head.W), f64(head.Bias)
			loss := func() float64 { return naiveJoint(ref, tokens, o.mask, o.obj, float64(c.genWeight), hw, hb, labels) }
			var blocks []gradBlock
			for i, pt := range m.Params.Tensors() {
				blocks = append(blocks, gradBlock{pt.Name, m.Grads.Tensors()[i].Data, nil})
			}
			off := 0
			for i := range blocks {
				blocks[i].x = ref.data[off : off+len(blocks[i].g)]
				off += len(blocks[i].g)
			}
			blocks = append(blocks, gradBlock{"classifier.weight", head.GW, hw}, gradBlock{"classifier.bias", head.GBias, hb})
			zeroOK := map[string]bool{}
			if o.obj == BERT {
				zeroOK["transformer.wte.weight"] = true // masked inputs are zeroed, not embedded
			}
			if c.genWeight == 0 {
				zeroOK["lm_head.weight"] = true
			}
			checkFiniteDiff(t, blocks, loss, zeroOK)
		})
	}
}

// gradBlock is one parameter tensor: its analytic gradient g and the
// float64 values x the reference loss reads.
type gradBlock struct {
	name string
	g    []float32
	x    []float64
}

// checkFiniteDiff compares each analytic gradient with the central
// difference of loss over its parameter.
func checkFiniteDiff(t *testing.T, blocks []gradBlock, loss func() float64, zeroOK map[string]bool) {
	t.Helper()
	const eps = 1e-5
	for _, b := range blocks {
		gs := maxAbs(f64(b.g))
		if gs == 0 && !zeroOK[b.name] {
			t.Errorf("%s: gradient is all zero", b.name)
		}
		bad := 0
		for i := range b.x {
			x := b.x[i]
			b.x[i] = x + eps
			lp := loss()
			b.x[i] = x - eps
			lm := loss()
			b.x[i] = x
			num, ana := (lp-lm)/(2*eps), float64(b.g[i])
			if err := math.Abs(num - ana); err > 2e-3*(math.Abs(num)+math.Abs(ana))+2e-6*gs {
				if bad < 3 {
					t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", b.name, i, ana, num)
				}
				bad++
			}
		}
	}
}

// TestPooledFinalMatchesForward checks the forward-only pooled state
// against the mean of the training Forward's FinalNormed, and a head's
// Predict against the argmax Forward scores.
func TestPooledFinalMatchesForward(t *testing.T) {
	cfg := Config{Layers: 2, D: 16, Heads: 4, Seq: 5, Vocab: 7}
	B := 9
	m := testModel(t, cfg, 2, 0.2)
	m.InferenceChunk = 2 * cfg.Seq // several chunks
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := randomTokens(rng, B*cfg.Seq, cfg.Vocab)
	wantLoss, err := m.Forward(tokens, nil, AR)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, B*cfg.D)
	meanPool(want, m.FinalNormed(), B, cfg.Seq, cfg.D)
	got := make([]float32, B*cfg.D)
	loss, n, err := m.PooledFinal(tokens, nil, AR, got)
	if err != nil {
		t.Fatal(err)
	}
	if n != B*cfg.Seq || math.Abs(loss-wantLoss) > 1e-5 {
		t.Errorf("loss %v over %d, want %v over %d", loss, n, wantLoss, B*cfg.Seq)
	}
	if e := relErr(got, f64(want)); e > 1e-5 {
		t.Errorf("pooled features differ from Forward's by %.3g (relative)", e)
	}
	head := NewClassHead(cfg.D, 3, 7)
	labels := make([]int32, B)
	_, correct, err := head.Forward(m.FinalNormed(), labels, B, cfg.Seq)
	if err != nil {
		t.Fatal(err)
	}
	pred := make([]int32, B)
	head.Predict(pred, got, make([]float32, B*3), B)
	zeros := 0
	for _, p := range pred {
		if p == 0 {
			zeros++
		}
	}
	if zeros != correct {
		t.Errorf("Predict says class 0 for %d sequences, Forward counted %d correct with all labels 0", zeros, correct)
	}
	if _, _, err := head.Forward(m.FinalNormed(), []int32{0, 0, 0, 0, 0, 0, 0, 0, 3}, B, cfg.Seq); err == nil {
		t.Error("label 3 with 3 classes: no error")
	}
}

// FuzzLoadClassifier: any input either fails to load with an error or
// gives a model and head whose shapes agree.
func FuzzLoadClassifier(f *testing.F) {
	p, _ := NewParams(Config{Layers: 1, D: 4, Heads: 2, Seq: 2, Vocab: 3})
	p.Init(1)
	var b bytes.Buffer
	if err := SaveClassifier(&b, p, NewClassHead(4, 3, 1), map[string]string{"step": "7"}); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add(b.Bytes()[:len(b.Bytes())/2])
	var plain bytes.Buffer
	SaveCheckpoint(&plain, p, nil)
	f.Add(plain.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		q, h, _, err := LoadClassifier(bytes.NewReader(data))
		if err != nil {
			return
		}
		if h.D != q.Config.D || len(h.W) != h.Classes*h.D || len(h.Bias) != h.Classes || h.Classes < 1 {
			t.Fatalf("loaded a head [%d,%d] (%d, %d values) for a model of width %d", h.Classes, h.D, len(h.W), len(h.Bias), q.Config.D)
		}
	})
}

// TestLoadClassifierRoundTrip saves a model and head and loads them back,
// and refuses a pretrained checkpoint without a head.
func TestLoadClassifierRoundTrip(t *testing.T) {
	p, _ := NewParams(Config{Layers: 1, D: 8, Heads: 2, Seq: 3, Vocab: 5})
	p.Init(2)
	h := NewClassHead(8, 4, 3)
	h.Bias[2] = 0.5
	var b bytes.Buffer
	if err := SaveClassifier(&b, p, h, map[string]string{"val_acc": "0.5"}); err != nil {
		t.Fatal(err)
	}
	q, g, meta, err := LoadClassifier(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if q.Config != p.Config || !slices.Equal(q.Data, p.Data) || !slices.Equal(g.W, h.W) || !slices.Equal(g.Bias, h.Bias) || meta["val_acc"] != "0.5" {
		t.Fatal("round trip changed the model, the head or the metadata")
	}
	var plain bytes.Buffer
	SaveCheckpoint(&plain, p, nil)
	if _, _, _, err := LoadClassifier(bytes.NewReader(plain.Bytes())); err == nil || !strings.Contains(err.Error(), "not a fine-tuned one") {
		t.Fatalf("pretrained checkpoint as a classifier: %v", err)
	}
}
