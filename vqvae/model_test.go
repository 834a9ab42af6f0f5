package vqvae

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

func tinyConfig() Config {
	return Config{Hidden: 8, ResHidden: 4, ResBlocks: 2, K: 16, D: 4, Factor: 4,
		Beta: 0.25, Decay: 0.99, Epsilon: 1e-5, DeadAfter: 0}
}

func randImages(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.Float64() - 0.5)
	}
	return x
}

func TestConfigValidate(t *testing.T) {
	bad := map[string]func(*Config){
		"codes":  func(c *Config) { c.K = 65536 },
		"factor": func(c *Config) { c.Factor = 3 },
		"hidden": func(c *Config) { c.Hidden = 7 },
		"decay":  func(c *Config) { c.Decay = 1 },
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for key, f := range bad {
		c := DefaultConfig()
		f(&c)
		err := c.Validate()
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(key+" =")) {
			t.Errorf("%s: error %v does not name the key", key, err)
		}
	}
	if err := DefaultConfig().CheckImage(30, 32); err == nil {
		t.Error("factor 4 accepted for 30×32 images")
	}
}

// TestGradientsFD checks every parameter's gradient by central differences
// of the loss the gradients are of: the decoder's directly (the codes do not
// move), the encoder's through the straight-through estimator, i.e. the
// loss with the decoder fed z_e + (z_q − z_e) frozen at the unperturbed
// point.
func TestGradientsFD(t *testing.T) {
	for _, f := range []int{2, 4} {
		cfg := tinyConfig()
		cfg.Factor = f
		m, err := New(cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		const n, h, w, dataVar = 2, 8, 8, 0.07
		x := randImages(2, n*h*w*3)
		if _, err := m.Forward(x, n, h, w, dataVar); err != nil {
			t.Fatal(err)
		}
		m.Backward(dataVar)
		g := m.last
		ze0 := append([]float32(nil), g.acts[g.ze]...)
		zq0 := append([]float32(nil), g.acts[g.zq]...)
		// surrogate loss with the quantizer's offset frozen
		loss := func() float64 {
			copy(g.acts[g.x], x)
			g.run(g.enc)
			ze, zq := g.acts[g.ze], g.acts[g.zq]
			var ce float64
			for i := range ze {
				zq[i] = ze[i] + (zq0[i] - ze0[i])
				d := float64(ze[i]) - float64(zq0[i])
				ce += d * d
			}
			g.run(g.dec)
			var se float64
			for i, v := range g.acts[g.y] {
				d := float64(v) - float64(x[i])
				se += d * d
			}
			return se/float64(len(x))/dataVar + cfg.Beta*ce/float64(len(ze))
		}
		r := rand.New(rand.NewPCG(3, 4))
		for _, p := range m.Params {
			for k := 0; k < 3; k++ {
				i := r.IntN(len(p.W))
				old := p.W[i]
				const step = 1e-3
				p.W[i] = old + step
				lp := loss()
				p.W[i] = old - step
				lm := loss()
				p.W[i] = old
				fd := (lp - lm) / (2 * step)
				an := float64(p.G[i])
				if math.Abs(fd-an) > 2e-2*math.Max(math.Abs(fd), math.Abs(an))+3e-4 { // float32 forward: ~1e-4 noise at this step
					t.Errorf("f=%d %s[%d]: analytic %g, finite difference %g", f, p.Name, i, an, fd)
				}
			}
		}
	}
}

// TestQuantizeNearest compares the chosen codes with a float64 search.
func TestQuantizeNearest(t *testing.T) {
	m, _ := New(tinyConfig(), 5)
	const n, h, w = 3, 8, 12
	x := randImages(6, n*h*w*3)
	codes := make([]uint16, n*2*3)
	if err := m.Encode(codes, x, n, h, w); err != nil {
		t.Fatal(err)
	}
	g := m.last
	if g == nil {
		g = m.build(n, h, w, false)
	}
	ze := g.acts[g.ze]
	D := m.Cfg.D
	for i, c := range codes {
		best, bd := -1, math.Inf(1)
		for k := 0; k < m.Cfg.K; k++ {
			var d float64
			for j := 0; j < D; j++ {
				v := float64(ze[i*D+j]) - float64(m.Codebook[k*D+j])
				d += v * v
			}
			if d < bd {
				best, bd = k, d
			}
		}
		if int(c) != best {
			t.Fatalf("row %d: code %d, nearest %d", i, c, best)
		}
	}
}

// TestEMAUpdate checks one codebook update against the formula in float64
// and the restart of unused codes.
func TestEMAUpdate(t *testing.T) {
	cfg := tinyConfig()
	cfg.K, cfg.DeadAfter = 64, 2
	m, _ := New(cfg, 7)
	const n, h, w = 2, 8, 8
	x := randImages(8, n*h*w*3)
	for step := 1; step <= 3; step++ {
		if _, err := m.Forward(x, n, h, w, 1); err != nil {
			t.Fatal(err)
		}
		g := m.last
		K, D := cfg.K, cfg.D
		oldCount := append([]float32(nil), m.EMACount...)
		oldSum := append([]float32(nil), m.EMASum...)
		oldUnused := append([]int32(nil), m.Unused...)
		restarted := m.UpdateCodebook()
		cnt := make([]float64, K)
		sum := make([]float64, K*D)
		ze := g.acts[g.ze]
		for i, c := range g.codes {
			cnt[c]++
			for j := 0; j < D; j++ {
				sum[int(c)*D+j] += float64(ze[i*D+j])
			}
		}
		bc := 1 - math.Pow(cfg.Decay, float64(step))
		var tot float64
		ec := make([]float64, K)
		for k := range ec {
			ec[k] = cfg.Decay*float64(oldCount[k]) + (1-cfg.Decay)*cnt[k]
			tot += ec[k] / bc
		}
		nRestart := 0
		for k := 0; k < K; k++ {
			unused := oldUnused[k] + 1
			if cnt[k] > 0 {
				unused = 0
			}
			if int(unused) >= cfg.DeadAfter {
				// restarted on a row of z_e
				nRestart++
				found := false
				for i := 0; i < len(g.codes) && !found; i++ {
					found = equal(m.Codebook[k*D:k*D+D], ze[i*D:i*D+D])
				}
				if !found || m.Unused[k] != 0 || math.Abs(float64(m.EMACount[k])-bc) > 1e-6 {
					t.Fatalf("step %d: code %d not restarted on an encoder output", step, k)
				}
				continue
			}
			if m.Unused[k] != unused {
				t.Fatalf("step %d: unused[%d] = %d, want %d", step, k, m.Unused[k], unused)
			}
			cs := (ec[k]/bc + cfg.Epsilon) / (tot + float64(K)*cfg.Epsilon) * tot
			for j := 0; j < D; j++ {
				es := cfg.Decay*float64(oldSum[k*D+j]) + (1-cfg.Decay)*sum[k*D+j]
				want := es / bc / cs
				if got := float64(m.Codebook[k*D+j]); math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
					t.Fatalf("step %d: codebook[%d,%d] = %g, want %g", step, k, j, got, want)
				}
			}
		}
		if restarted != nRestart {
			t.Fatalf("step %d: %d restarted, want %d", step, restarted, nRestart)
		}
		if step == 2 && nRestart == 0 {
			t.Fatalf("step 2: no code restarted (64 codes, 8 rows): the test checks nothing")
		}
	}
}

func equal(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// TestEncodeDecodeSave: Decode(Encode(x)) equals Reconstruct(x), also after
// a save/load round trip that keeps every tensor bit for bit.
func TestEncodeDecodeSave(t *testing.T) {
	cfg := tinyConfig()
	cfg.DeadAfter = 3
	m, _ := New(cfg, 9)
	a := NewAdam(m, 1e-3, 0.9, 0.999, 1e-8)
	const n, h, w = 2, 8, 8
	x := randImages(10, n*h*w*3)
	for i := 0; i < 3; i++ {
		if _, _, err := TrainStep(m, a, x, n, h, w, 0.08); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := m.Save(&buf); err != nil {
		t.Fatal(err)
	}
	m2, err := Load(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if m2.Updates != 3 || m2.Cfg != m.Cfg {
		t.Fatalf("loaded updates %d cfg %+v", m2.Updates, m2.Cfg)
	}
	var buf2 bytes.Buffer
	m2.Save(&buf2)
	if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
		t.Fatal("save(load(save(m))) differs from save(m)")
	}
	codes := make([]uint16, n*2*2)
	if err := m2.Encode(codes, x, n, h, w); err != nil {
		t.Fatal(err)
	}
	dec := make([]float32, n*h*w*3)
	if err := m2.Decode(dec, codes, n, 2, 2); err != nil {
		t.Fatal(err)
	}
	rec := make([]float32, n*h*w*3)
	if err := m.Reconstruct(rec, x, n, h, w); err != nil {
		t.Fatal(err)
	}
	if !equal(dec, rec) {
		t.Fatal("Decode(Encode(x)) of the loaded model differs from Reconstruct(x)")
	}
	codes[0] = uint16(cfg.K)
	if err := m2.Decode(dec, codes, n, 2, 2); err == nil {
		t.Fatal("out-of-range code accepted")
	}
	// optimizer round trip
	var ob bytes.Buffer
	if err := a.Save(&ob, m); err != nil {
		t.Fatal(err)
	}
	a2 := NewAdam(m2, 1e-3, 0.9, 0.999, 1e-8)
	if err := a2.Load(bytes.NewReader(ob.Bytes()), m2); err != nil {
		t.Fatal(err)
	}
	// one more step on both gives identical models
	TrainStep(m, a, x, n, h, w, 0.08)
	TrainStep(m2, a2, x, n, h, w, 0.08)
	var b1, b2 bytes.Buffer
	m.Save(&b1)
	m2.Save(&b2)
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Fatal("a step after load differs from a step before save")
	}
}

// TestTrainingReducesLoss: a few hundred steps on 4 fixed images lower the
// loss well below its start.
func TestTrainingReducesLoss(t *testing.T) {
	cfg := tinyConfig()
	cfg.DeadAfter = 10
	m, _ := New(cfg, 11)
	a := NewAdam(m, 3e-3, 0.9, 0.999, 1e-8)
	const n, h, w = 4, 8, 8
	x := randImages(12, n*h*w*3)
	first, _, _ := TrainStep(m, a, x, n, h, w, 1.0/12)
	var last Stats
	for i := 0; i < 200; i++ {
		last, _, _ = TrainStep(m, a, x, n, h, w, 1.0/12)
	}
	if !(last.Recon < 0.5*first.Recon) {
		t.Fatalf("recon loss %g → %g: not halved", first.Recon, last.Recon)
	}
}
