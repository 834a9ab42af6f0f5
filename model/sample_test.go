package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// sampleModel is a small random model for the sampling tests: Params.Init
// and then a random N(0, 1) head, so that the logits are far from uniform.
func sampleModel(t *testing.T, cfg Config, seed uint64) *Model {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Params.Init(seed)
	rng := rand.New(rand.NewPCG(seed, 99))
	for i := range m.Params.LMHead {
		m.Params.LMHead[i] = float32(rng.NormFloat64())
	}
	return m
}

// TestSamplerMatchesForward: cached decoding gives Forward's logits at
// every position, for T not a multiple of any tile size and head widths
// with a remainder, on an Init model and on a "trained-ish" random one.
// stepAndCompare Steps s from position start to T over tokens [B,T] and
// compares each position's logits with want [B,T,V] (Forward's), relative
// to scale; it returns the worst relative difference.
func stepAndCompare(t *testing.T, s *Sampler, tokens []int32, want []float32, start, T int, scale float64, pass int) float64 {
	t.Helper()
	B, V := s.Batch(), s.m.Config.Vocab
	logits := make([]float32, B*V)
	prev := make([]int32, B)
	worst := 0.0
	for pos := start; pos < T; pos++ {
		if pos > 0 {
			for b := range prev {
				prev[b] = tokens[b*T+pos-1]
			}
		}
		if err := s.Step(prev, logits); err != nil {
			t.Fatal(err)
		}
		var d float64
		for b := 0; b < B; b++ {
			for i := 0; i < V; i++ {
				d = math.Max(d, math.Abs(float64(logits[b*V+i]-want[(b*T+pos)*V+i])))
			}
		}
		if d/scale > 1e-5 {
			t.Errorf("pass %d position %d: max |Δlogit| = %.3g (%.3g of the scale %.3g)", pass, pos, d, d/scale, scale)
		}
		worst = math.Max(worst, d/scale)
	}
	return worst
}

func TestSamplerMatchesForward(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		T, B int
		init func(*Model)
	}{
		{"init", Config{Layers: 2, D: 30, Heads: 3, Seq: 40, Vocab: 19}, 37, 3, nil},
		{"random", Config{Layers: 3, D: 24, Heads: 2, Seq: 53, Vocab: 23}, 53, 2,
			func(m *Model) { randomParams(m.Params, 11, 0.2) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := sampleModel(t, c.cfg, 5)
			if c.init != nil {
				c.init(m)
			}
			B, T, V := c.B, c.T, c.cfg.Vocab
			tokens := randomTokens(rand.New(rand.NewPCG(1, 2)), B*T, V)
			if err := m.Reserve(B, T); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Forward(tokens, nil, AR); err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(m.Logits()) // [B,T,V]
			var scale float64
			for _, v := range want {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			if scale < 1 {
				t.Fatalf("logit scale %g: the test model is too flat", scale)
			}

			s, err := NewSampler(m, B)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// pass 0: Steps from position 0; pass 1: again after Reset;
			// pass 2: Prefill of the first P positions, then Steps.
			const P = 17
			prefix := make([]int32, B*P)
			for b := 0; b < B; b++ {
				copy(prefix[b*P:(b+1)*P], tokens[b*T:b*T+P])
			}
			for pass := 0; pass < 3; pass++ {
				s.Reset()
				start := 0
				if pass == 2 {
					if err := s.Prefill(prefix); err != nil {
						t.Fatal(err)
					}
					if s.Pos() != P {
						t.Fatalf("after Prefill of %d: Pos() = %d", P, s.Pos())
					}
					start = P
				}
				worst := stepAndCompare(t, s, tokens, want, start, T, scale, pass)
				if pass != 1 {
					t.Logf("%v B=%d T=%d from position %d: worst relative logit error %.2g (scale %.3g)", c.cfg, B, T, start, worst, scale)
				}
			}
		})
	}
}

func TestSamplerStepErrors(t *testing.T) {
	cfg := Config{Layers: 1, D: 8, Heads: 2, Seq: 3, Vocab: 5}
	m := sampleModel(t, cfg, 1)
	if _, err := NewSampler(m, 0); err == nil {
		t.Error("NewSampler(B=0): no error")
	}
	if _, err := newSampler(m, 1, 4); err == nil {
		t.Error("sampler longer than Seq: no error")
	}
	s, err := NewSampler(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	logits := make([]float32, 2*cfg.Vocab)
	if err := s.Step(nil, logits[:3]); err == nil {
		t.Error("short logits: no error")
	}
	if err := s.Step(nil, logits); err != nil { // tokens ignored at t = 0
		t.Fatal(err)
	}
	if err := s.Step([]int32{1}, logits); err == nil {
		t.Error("one token for two sequences: no error")
	}
	if err := s.Step([]int32{1, 5}, logits); err == nil {
		t.Error("token out of range: no error")
	}
	for s.Pos() < cfg.Seq {
		if err := s.Step([]int32{1, 2}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Step([]int32{1, 2}, logits); err == nil {
		t.Error("step past Seq: no error")
	}
	for _, bad := range [][]int32{nil, {1, 2, 3}, {1, 2, 3, 4, 1, 2, 3, 4}, {1, 5}, {-1, 0}} {
		if err := s.Prefill(bad); err == nil {
			t.Errorf("Prefill(%v): no error", bad)
		}
	}
	if err := s.Prefill([]int32{1, 2, 3, 4, 0, 1}); err != nil || s.Pos() != 3 {
		t.Errorf("Prefill of the whole length: Pos() = %d, %v", s.Pos(), err)
	}
	s.Close()
	s.Close() // idempotent; a closed sampler still works, sequentially
	s.Reset()
	if err := s.Step(nil, logits); err != nil {
		t.Errorf("closed sampler: %v", err)
	}
}

// greedyForward decodes greedily by full recomputation with Forward: the
// logits of position t depend only on tokens < t (causal), so the not yet
// decoded tail of the [B,n] buffer does not matter.
func greedyForward(t *testing.T, m *Model, prefix []int32, B, n int) []int32 {
	t.Helper()
	P, V := len(prefix)/B, m.Config.Vocab
	out := make([]int32, B*n)
	for b := 0; b < B; b++ {
		copy(out[b*n:], prefix[b*P:(b+1)*P])
	}
	if err := m.Reserve(B, n); err != nil {
		t.Fatal(err)
	}
	for pos := P; pos < n; pos++ {
		if _, err := m.Forward(out, nil, AR); err != nil {
			t.Fatal(err)
		}
		lg := m.Logits()
		for b := 0; b < B; b++ {
			out[b*n+pos] = argmax32(lg[(b*n+pos)*V : (b*n+pos+1)*V])
		}
	}
	return out
}

func TestSample(t *testing.T) {
	cfg := Config{Layers: 2, D: 16, Heads: 2, Seq: 21, Vocab: 13}
	m := sampleModel(t, cfg, 3)
	const B, n, P = 3, 21, 7
	prefix := randomTokens(rand.New(rand.NewPCG(4, 4)), B*P, cfg.Vocab)

	check := func(name string, got []int32, P int) {
		t.Helper()
		if len(got) != B*n {
			t.Fatalf("%s: %d tokens, want %d", name, len(got), B*n)
		}
		for b := 0; b < B; b++ {
			if !slices.Equal(got[b*n:b*n+P], prefix[b*P:(b+1)*P]) {
				t.Errorf("%s: sequence %d does not keep its prefix", name, b)
			}
		}
		for _, x := range got {
			if x < 0 || int(x) >= cfg.Vocab {
				t.Fatalf("%s: token %d out of range", name, x)
			}
		}
	}

	opts := []SampleOptions{
		{Seed: 1},
		{Temperature: 0.7, TopK: 4, Seed: 2},
		{Temperature: 1.3, TopP: 0.8, Seed: 3},
		{TopK: 5, TopP: 0.6, Seed: 4},
	}
	for _, o := range opts {
		a, err := m.Sample(prefix, B, n, o)
		if err != nil {
			t.Fatal(err)
		}
		check("Sample", a, P)
		b, err := m.Sample(prefix, B, n, o)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a, b) {
			t.Errorf("%+v: two samples with one seed differ", o)
		}
		naive, err := m.SampleNaive(prefix, B, n, o)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a, naive) {
			t.Errorf("%+v: cached and naive samples differ:\n%v\n%v", o, a, naive)
		}
		o.Seed += 100
		c, err := m.Sample(prefix, B, n, o)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(a, c) {
			t.Errorf("%+v: other seed, same sample", o)
		}
	}

	want := checkGreedySample(t, m, prefix, B, n)
	checkSampleEdges(t, m, prefix, want, B, n)
}

// checkGreedySample: top-k 1 (any temperature) and a tiny top-p are
// argmax, and match greedy decoding by full recomputation, which it returns.
func checkGreedySample(t *testing.T, m *Model, prefix []int32, B, n int) []int32 {
	t.Helper()
	want := greedyForward(t, m, prefix, B, n)
	for _, o := range []SampleOptions{{TopK: 1, Temperature: 0.3, Seed: 9}, {TopK: 1}, {TopP: 1e-9, Seed: 5}} {
		got, err := m.Sample(prefix, B, n, o)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v: Sample is not greedy decoding:\n%v\n%v", o, got, want)
		}
		got, err = m.SampleNaive(prefix, B, n, o)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v: SampleNaive is not greedy decoding", o)
		}
	}
	return want
}

// checkSampleEdges samples unconditionally (P = 0), from a whole prefix
// (P = n), a shorter length with a reused Sampler (want: greedy decoding).
func checkSampleEdges(t *testing.T, m *Model, prefix, want []int32, B, n int) {
	t.Helper()
	if got, err := m.Sample(nil, B, n, SampleOptions{Seed: 1}); err != nil || len(got) != B*n {
		t.Errorf("unconditional: %d tokens, %v", len(got), err)
	}
	full := randomTokens(rand.New(rand.NewPCG(5, 5)), B*n, m.Config.Vocab)
	if got, err := m.Sample(full, B, n, SampleOptions{}); err != nil || !slices.Equal(got, full) {
		t.Errorf("P = n: %v", err)
	}
	s, err := NewSampler(m, B)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		got, err := s.Sample(prefix, 12, SampleOptions{TopK: 1})
		if err != nil {
			t.Fatal(err)
		}
		for b := 0; b < B; b++ {
			if !slices.Equal(got[b*12:(b+1)*12], want[b*n:b*n+12]) {
				t.Errorf("Sampler.Sample n=12, sequence %d: %v, want %v", b, got[b*12:(b+1)*12], want[b*n:b*n+12])
			}
		}
	}
}

func TestSampleErrors(t *testing.T) {
	cfg := Config{Layers: 1, D: 8, Heads: 2, Seq: 6, Vocab: 5}
	m := sampleModel(t, cfg, 1)
	ok := []int32{1, 2, 3, 4}
	cases := []struct {
		name   string
		prefix []int32
		B, n   int
		opt    SampleOptions
	}{
		{"negative temperature", ok, 2, 6, SampleOptions{Temperature: -1}},
		{"NaN temperature", ok, 2, 6, SampleOptions{Temperature: math.NaN()}},
		{"infinite temperature", ok, 2, 6, SampleOptions{Temperature: math.Inf(1)}},
		{"negative top-k", ok, 2, 6, SampleOptions{TopK: -1}},
		{"negative top-p", ok, 2, 6, SampleOptions{TopP: -0.1}},
		{"top-p > 1", ok, 2, 6, SampleOptions{TopP: 1.5}},
		{"NaN top-p", ok, 2, 6, SampleOptions{TopP: math.NaN()}},
		{"B = 0", nil, 0, 6, SampleOptions{}},
		{"n = 0", nil, 2, 0, SampleOptions{}},
		{"n > Seq", ok, 2, 7, SampleOptions{}},
		{"ragged prefix", ok[:3], 2, 6, SampleOptions{}},
		{"prefix longer than n", ok, 1, 3, SampleOptions{}},
		{"token out of range", []int32{1, 5}, 2, 6, SampleOptions{}},
		{"negative token", []int32{-1, 0}, 2, 6, SampleOptions{}},
	}
	for _, c := range cases {
		if _, err := m.Sample(c.prefix, c.B, c.n, c.opt); err == nil {
			t.Errorf("Sample, %s: no error", c.name)
		}
		if _, err := m.SampleNaive(c.prefix, c.B, c.n, c.opt); err == nil {
			t.Errorf("SampleNaive, %s: no error", c.name)
		}
	}
	s, err := newSampler(m, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Sample(ok, 5, SampleOptions{}); err == nil {
		t.Error("Sampler.Sample longer than its cache: no error")
	}
	if _, err := s.Sample(ok, 4, SampleOptions{}); err != nil {
		t.Errorf("Sampler.Sample: %v", err)
	}
}

// TestTokenPicker checks the draws' distribution on fixed logits: the
// frequencies follow softmax(logits/temperature) restricted to the top-k
// and the nucleus, renormalised.
func TestTokenPicker(t *testing.T) {
	logits := []float32{1, 3, 0.5, 2, 3, -1} // ids 1 and 4 tie for the top
	probs := func(temp float64, keep []int) []float64 {
		p := make([]float64, len(logits))
		var s float64
		for _, i := range keep {
			p[i] = math.Exp(float64(logits[i]) / temp)
			s += p[i]
		}
		for i := range p {
			p[i] /= s
		}
		return p
	}
	all := []int{0, 1, 2, 3, 4, 5}
	// softmax at temperature 1: 1 and 4 hold 0.36 each, 3 0.13, 0 0.05;
	// the nucleus of 0.8 is {1, 4, 3}.
	cases := []struct {
		opt  SampleOptions
		want []float64
	}{
		{SampleOptions{}, probs(1, all)},
		{SampleOptions{Temperature: 2}, probs(2, all)},
		{SampleOptions{Temperature: 0.5, TopK: 3}, probs(0.5, []int{1, 4, 3})},
		{SampleOptions{TopP: 0.8}, probs(1, []int{1, 4, 3})},
		{SampleOptions{TopK: 2, TopP: 0.9}, probs(1, []int{1, 4})},
		{SampleOptions{TopP: 0.2}, probs(1, []int{1})},
		{SampleOptions{TopK: 1, Temperature: 5}, probs(1, []int{1})},
		{SampleOptions{TopK: 6}, probs(1, all)},
	}
	const draws = 20000
	for _, c := range cases {
		tp := newTokenPicker(c.opt, len(logits))
		rng := rand.New(rand.NewPCG(1, 2))
		count := make([]float64, len(logits))
		for range draws {
			count[tp.pick(logits, rng)]++
		}
		for i := range count {
			got := count[i] / draws
			if c.want[i] == 0 && got != 0 || math.Abs(got-c.want[i]) > 0.015 {
				t.Errorf("%+v: token %d drawn %.4f of the time, want %.4f", c.opt, i, got, c.want[i])
			}
		}
	}
}

// TestSamplerNoAllocs: a steady-state Step allocates nothing.
func TestSamplerNoAllocs(t *testing.T) {
	cfg := Config{Layers: 2, D: 16, Heads: 4, Seq: 12, Vocab: 11}
	m := sampleModel(t, cfg, 2)
	const B = 4
	s, err := NewSampler(m, B)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tokens := []int32{1, 2, 3, 4}
	logits := make([]float32, B*cfg.Vocab)
	step := func() {
		if s.Pos() == s.Len() {
			s.Reset()
		}
		if err := s.Step(tokens, logits); err != nil {
			panic(err)
		}
	}
	for range cfg.Seq + 1 {
		step()
	}
	if n := testing.AllocsPerRun(50, step); n != 0 {
		t.Errorf("%v allocations per Step, want 0", n)
	}
}
