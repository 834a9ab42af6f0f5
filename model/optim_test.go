package model

import (
	"math"
	"testing"
)

func TestSchedule(t *testing.T) {
	s := Schedule{LR: 1e-3, Warmup: 10, Total: 110}
	for _, c := range []struct {
		step int
		want float64
	}{{0, 0}, {1, 1e-4}, {5, 5e-4}, {10, 1e-3}, {60, 0.5e-3}, {110, 0}, {200, 0}} {
		if got := s.At(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("At(%d) = %g, want %g", c.step, got, c.want)
		}
	}
	prev := s.At(10)
	for step := 11; step <= 110; step++ {
		if lr := s.At(step); lr > prev {
			t.Fatalf("lr increases after warm-up at step %d", step)
		} else {
			prev = lr
		}
	}
	if got := (Schedule{LR: 1, Warmup: 0, Total: 4}).At(2); math.Abs(got-0.5) > 1e-12 {
		t.Errorf("no warm-up: At(2) = %g, want 0.5", got)
	}
}

// TestOptimizer checks one and two Adam steps against a float64
// transcription, weight decay on matrices only, and clipping.
func TestOptimizer(t *testing.T) {
	cfg := Config{Layers: 1, D: 4, Heads: 2, Seq: 3, Vocab: 5}
	p, _ := NewParams(cfg)
	randomParams(p, 1, 0.5)
	g, _ := NewParams(cfg)
	randomParams(g, 2, 1)
	o, _ := NewOptimizer(cfg)
	o.WeightDecay = 0.1
	p0 := append([]float32(nil), p.Data...)
	const lr = 0.01
	m := make([]float64, len(p.Data))
	v := make([]float64, len(p.Data))
	want := make([]float64, len(p.Data))
	for i := range want {
		want[i] = float64(p0[i])
	}
	gains := map[int]bool{}
	off := 0
	for _, ts := range p.Tensors() {
		if IsGain(ts.Name) {
			for i := range ts.Data {
				gains[off+i] = true
			}
		}
		off += len(ts.Data)
	}
	for step := 1; step <= 2; step++ {
		norm, err := o.Update(p, g, lr)
		if err != nil {
			t.Fatal(err)
		}
		var ss float64
		for i, gv := range g.Data {
			gi := float64(gv)
			ss += gi * gi
			m[i] = 0.9*m[i] + 0.1*gi
			v[i] = 0.95*v[i] + 0.05*gi*gi
			mh := m[i] / (1 - math.Pow(0.9, float64(step)))
			vh := v[i] / (1 - math.Pow(0.95, float64(step)))
			wd := 0.1
			if gains[i] {
				wd = 0
			}
			want[i] -= lr * (mh/(math.Sqrt(vh)+1e-8) + wd*want[i])
		}
		if math.Abs(norm-math.Sqrt(ss)) > 1e-5*norm {
			t.Errorf("grad norm %g, want %g", norm, math.Sqrt(ss))
		}
	}
	for i, w := range want {
		if math.Abs(float64(p.Data[i])-w) > 1e-6 {
			t.Fatalf("param %d = %g, want %g (gain %v)", i, p.Data[i], w, gains[i])
		}
	}
	if o.Step != 2 {
		t.Errorf("Step = %d", o.Step)
	}
	// clipping scales the gradient to the norm
	o2, _ := NewOptimizer(cfg)
	o2.ClipNorm = 0.5
	norm, _ := o2.Update(p, g, lr)
	var ss float64
	for _, gv := range g.Data {
		ss += float64(gv) * float64(gv)
	}
	if norm <= 0.5 || math.Abs(math.Sqrt(ss)-0.5) > 1e-5 {
		t.Errorf("after clipping at 0.5: norm before %g, after %g", norm, math.Sqrt(ss))
	}
	if _, err := o2.Update(p, &Params{Data: g.Data[:3]}, lr); err == nil {
		t.Error("mismatched gradients: no error")
	}
}

// TestTrainingReducesLoss fits a tiny model to a fixed batch.
func TestTrainingReducesLoss(t *testing.T) {
	cfg := Config{Layers: 2, D: 32, Heads: 4, Seq: 16, Vocab: 8}
	for _, obj := range []Objective{AR, BERT} {
		m, _ := New(cfg)
		m.Params.Init(1)
		o, _ := NewOptimizer(cfg)
		o.ClipNorm = 1
		tokens := make([]int32, 4*cfg.Seq)
		for i := range tokens {
			tokens[i] = int32((i*i + i/3) % cfg.Vocab)
		}
		var mask []bool
		if obj == BERT {
			mask = make([]bool, len(tokens))
			for i := range mask {
				mask[i] = i%3 == 0
			}
		}
		sched := Schedule{LR: 3e-3, Warmup: 5, Total: 60}
		var first, last float64
		for step := 1; step <= 60; step++ {
			m.ZeroGrads()
			loss, err := m.Forward(tokens, mask, obj)
			if err != nil {
				t.Fatal(err)
			}
			if step == 1 {
				first = loss
			}
			last = loss
			m.Backward()
			o.Update(m.Params, m.Grads, sched.At(step))
		}
		if !(last < 0.5*first) {
			t.Errorf("%v: loss %.3f -> %.3f, want at least halved", obj, first, last)
		}
		if math.Abs(first-math.Log(float64(cfg.Vocab))) > 1e-6 {
			t.Errorf("%v: initial loss %.6f, want ln V = %.6f (zero head)", obj, first, math.Log(float64(cfg.Vocab)))
		}
	}
}
