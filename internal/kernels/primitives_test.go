package kernels

import (
	"math"
	"math/rand"
	"testing"
)

var oddSizes = []int{1, 3, 7, 17, 33, 65, 257, 1000}

// dotLoss is the scalar loss L = Σ out·w (float64), whose gradient with
// respect to out is w.
func dotLoss(out, w []float32) float64 {
	var s float64
	for i := range out {
		s += float64(out[i]) * float64(w[i])
	}
	return s
}

// fdCheck compares grad (∂L/∂x from a backward pass) with central finite
// differences of loss() at up to n sampled entries of x.
func fdCheck(t *testing.T, name string, r *rand.Rand, x, grad []float32, h float64, n int, loss func() float64) {
	t.Helper()
	var gmax float64
	for _, g := range grad {
		gmax = math.Max(gmax, math.Abs(float64(g)))
	}
	for s := 0; s < n; s++ {
		i := r.Intn(len(x))
		if s < len(x) && len(x) <= n {
			i = s
		}
		orig := x[i]
		x[i] = orig + float32(h)
		hp := float64(x[i] - orig)
		lp := loss()
		x[i] = orig - float32(h)
		hm := float64(orig - x[i])
		lm := loss()
		x[i] = orig
		fd := (lp - lm) / (hp + hm)
		if d := math.Abs(fd - float64(grad[i])); d > 2e-3*math.Max(gmax, 1e-3)+2e-3*math.Abs(fd) {
			t.Fatalf("%s: d/dx[%d] backward %g, finite difference %g", name, i, grad[i], fd)
		}
	}
}

func TestEmbedding(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(6))
		for _, n := range oddSizes {
			V, C := 17, []int{1, 3, 7, 33, 65}[n%5]
			table := randSlice(r, V*C, 1)
			ids := make([]int32, n)
			for i := range ids {
				ids[i] = int32(r.Intn(V+1)) - 1 // some -1
			}
			out := randSlice(r, n*C, 1)
			EmbeddingForward(out, ids, table, C)
			for i, id := range ids {
				for c := 0; c < C; c++ {
					want := float32(0)
					if id >= 0 {
						want = table[int(id)*C+c]
					}
					if out[i*C+c] != want {
						t.Fatalf("n=%d out[%d,%d] = %v want %v", n, i, c, out[i*C+c], want)
					}
				}
			}
			w := randSlice(r, n*C, 1)
			dtable := make([]float32, V*C)
			EmbeddingBackward(dtable, ids, w, C)
			fdCheck(t, "embedding", r, table, dtable, 1e-2, 20, func() float64 {
				EmbeddingForward(out, ids, table, C)
				return dotLoss(out, w)
			})
		}
	})
}

func TestRMSNorm(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(7))
		for _, N := range oddSizes {
			C := []int{1, 3, 7, 17, 65, 257}[N%6]
			if N == 1000 {
				C = 33
			}
			x := randSlice(r, N*C, 2)
			g := randSlice(r, C, 1)
			out := make([]float32, N*C)
			rstd := make([]float32, N)
			RMSNormForward(out, rstd, x, g, N, C)
			// float64 reference
			for n := 0; n < N; n++ {
				var ss float64
				for c := 0; c < C; c++ {
					ss += float64(x[n*C+c]) * float64(x[n*C+c])
				}
				rs := 1 / math.Sqrt(ss/float64(C)+1e-5)
				for c := 0; c < C; c++ {
					want := float64(x[n*C+c]) * rs * float64(g[c])
					if d := math.Abs(float64(out[n*C+c]) - want); d > 1e-5*(1+math.Abs(want)) {
						t.Fatalf("N=%d C=%d out %v want %v", N, C, out[n*C+c], want)
					}
				}
			}
			w := randSlice(r, N*C, 1)
			dx := make([]float32, N*C)
			dg := make([]float32, C)
			RMSNormBackward(dx, dg, w, x, g, rstd, N, C)
			loss := func() float64 {
				RMSNormForward(out, nil, x, g, N, C)
				return dotLoss(out, w)
			}
			fdCheck(t, "rmsnorm dx", r, x, dx, 1e-2, 12, loss)
			fdCheck(t, "rmsnorm dg", r, g, dg, 1e-2, 12, loss)
		}
	})
}

// TestRMSNormPathsAgree: every path's RMS norm, forward and backward,
// matches the portable Go rows element by element (a lane or tail bug
// that finite differences at a few points could miss), and writes
// nothing past its rows.
func TestRMSNormPathsAgree(t *testing.T) {
	const N = 5
	for _, C := range []int{1, 15, 16, 17, 33, 256, 257} {
		r := rand.New(rand.NewSource(int64(C)))
		x, g, dy := randSlice(r, N*C, 2), randSlice(r, C, 1), randSlice(r, N*C, 1)
		dx0 := randSlice(r, N*C+16, 1) // dx accumulates; 16 values past it
		run := func(path string) (out, rstd, dx, dg []float32) {
			old, err := SetPath(path)
			if err != nil {
				t.Fatal(err)
			}
			defer SetPath(old)
			out, rstd = make([]float32, N*C+16), make([]float32, N)
			for i := N * C; i < len(out); i++ {
				out[i] = float32(math.NaN()) // must stay NaN
			}
			RMSNormForward(out[:N*C], rstd, x, g, N, C)
			for i := N * C; i < len(out); i++ {
				if !math.IsNaN(float64(out[i])) {
					t.Fatalf("%s C=%d: RMSNormForward wrote past its rows at %d", path, C, i)
				}
			}
			dx, dg = append([]float32(nil), dx0...), make([]float32, C)
			RMSNormBackward(dx[:N*C], dg, dy, x, g, rstd, N, C)
			return
		}
		wOut, wRstd, wDx, wDg := run("generic")
		for _, path := range Paths() {
			out, rstd, dx, dg := run(path)
			for _, c := range []struct {
				name      string
				got, want []float32
			}{{"out", out, wOut}, {"rstd", rstd, wRstd}, {"dx", dx, wDx}, {"dg", dg, wDg}} {
				for i := range c.want {
					if i >= N*C && c.name == "out" {
						continue // the NaN sentinels, checked above
					}
					if d := math.Abs(float64(c.got[i] - c.want[i])); !(d <= 2e-5*(1+math.Abs(float64(c.want[i])))) {
						t.Fatalf("%s C=%d %s[%d] = %v, generic %v", path, C, c.name, i, c.got[i], c.want[i])
					}
				}
			}
		}
	}
}

func TestQuickGELU(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(8))
		for _, n := range append(oddSizes, 100003) {
			x := randSlice(r, n, 5)
			y := make([]float32, n)
			QuickGELUForward(y, x)
			for i, v := range x {
				want := float64(v) / (1 + math.Exp(-1.702*float64(v)))
				if d := math.Abs(float64(y[i]) - want); d > 1e-6*(1+math.Abs(want)) {
					t.Fatalf("n=%d gelu(%v) = %v want %v", n, v, y[i], want)
				}
			}
			if n > 1000 {
				continue
			}
			w := randSlice(r, n, 1)
			dx := make([]float32, n)
			QuickGELUBackward(dx, x, w)
			fdCheck(t, "gelu", r, x, dx, 1e-2, 20, func() float64 {
				QuickGELUForward(y, x)
				return dotLoss(y, w)
			})
		}
	})
}

func TestSoftmaxCrossEntropy(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(9))
		for _, N := range oddSizes {
			V := []int{1, 3, 7, 17, 33, 512}[N%6]
			logits := randSlice(r, N*V, 4)
			targets := make([]int32, N)
			for i := range targets {
				targets[i] = int32(r.Intn(V+1)) - 1 // some ignored
			}
			targets[0] = 0
			d := make([]float32, N*V)
			loss, count := SoftmaxCrossEntropy(d, logits, targets, V)
			// reference
			var wl float64
			wc := 0
			for n, tg := range targets {
				if tg < 0 {
					continue
				}
				wc++
				mx := math.Inf(-1)
				for _, v := range logits[n*V : n*V+V] {
					mx = math.Max(mx, float64(v))
				}
				var s float64
				for _, v := range logits[n*V : n*V+V] {
					s += math.Exp(float64(v) - mx)
				}
				wl += mx + math.Log(s) - float64(logits[n*V+int(tg)])
			}
			wl /= float64(wc)
			if count != wc || math.Abs(loss-wl) > 1e-6*(1+wl) {
				t.Fatalf("N=%d V=%d loss %v (%d rows) want %v (%d)", N, V, loss, count, wl, wc)
			}
			if l2, _ := SoftmaxCrossEntropy(nil, logits, targets, V); math.Abs(l2-loss) > 1e-6*(1+wl) {
				t.Fatalf("forward-only loss %v != %v", l2, loss)
			}
			fdCheck(t, "cross-entropy", r, logits, d, 1e-2, 20, func() float64 {
				l, _ := SoftmaxCrossEntropy(nil, logits, targets, V)
				return l
			})
			// in place
			cp := append([]float32(nil), logits...)
			SoftmaxCrossEntropy(cp, cp, targets, V)
			for i := range cp {
				if cp[i] != d[i] {
					t.Fatalf("aliased dlogits differ at %d: %v vs %v", i, cp[i], d[i])
				}
			}
		}
	})
}

func TestAttentionFiniteDifferences(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(10))
		for _, causal := range []bool{true, false} {
			B, T, C, H := 2, 7, 12, 3
			qkv := randSlice(r, B*T*3*C, 1)
			w := randSlice(r, B*T*C, 1)
			out := make([]float32, B*T*C)
			lse := make([]float32, B*H*T)
			dqkv := make([]float32, len(qkv))
			AttentionForward(out, lse, qkv, B, T, C, H, causal)
			AttentionBackward(dqkv, w, out, lse, qkv, B, T, C, H, causal)
			fdCheck(t, "attention", r, qkv, dqkv, 1e-2, 40, func() float64 {
				AttentionForward(out, lse, qkv, B, T, C, H, causal)
				return dotLoss(out, w)
			})
		}
	})
}

func TestAdamW(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(11))
		for _, n := range append(oddSizes, 70001) {
			p := randSlice(r, n, 1)
			g := randSlice(r, n, 1)
			m := randSlice(r, n, 0.1)
			v := randSlice(r, n, 0.1)
			for i := range v {
				v[i] = v[i] * v[i]
			}
			p0, m0, v0 := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
			const lr, b1, b2, eps, wd, step = 3e-4, 0.9, 0.95, 1e-8, 0.1, 7
			AdamW(p, g, m, v, step, lr, b1, b2, eps, wd)
			for i := range p {
				gi := float64(g[i])
				mi := b1*float64(m0[i]) + (1-b1)*gi
				vi := b2*float64(v0[i]) + (1-b2)*gi*gi
				mh := mi / (1 - math.Pow(b1, step))
				vh := vi / (1 - math.Pow(b2, step))
				want := float64(p0[i]) - lr*(mh/(math.Sqrt(vh)+eps)+wd*float64(p0[i]))
				if math.Abs(float64(p[i])-want) > 1e-6*(1+math.Abs(want)) || math.Abs(float64(m[i])-mi) > 1e-6 || math.Abs(float64(v[i])-vi) > 1e-6 {
					t.Fatalf("n=%d i=%d: p %v want %v", n, i, p[i], want)
				}
			}
		}
	})
}

// TestAdamWPathsAgree: every path's AdamW gives the Go loop's bits (the
// assembly rounds each operation as the loop does) and writes nothing
// past its slices.
func TestAdamWPathsAgree(t *testing.T) {
	for _, n := range []int{1, 15, 16, 17, 33, 1000, 70001} {
		r := rand.New(rand.NewSource(int64(n)))
		p0, g, m0, v0 := randSlice(r, n+16, 1), randSlice(r, n, 1), randSlice(r, n+16, 0.1), randSlice(r, n+16, 0.1)
		for i := range v0 {
			v0[i] *= v0[i]
		}
		run := func(path string) (p, m, v []float32) {
			old, err := SetPath(path)
			if err != nil {
				t.Fatal(err)
			}
			defer SetPath(old)
			p, m, v = append([]float32(nil), p0...), append([]float32(nil), m0...), append([]float32(nil), v0...)
			AdamW(p[:n], g, m[:n], v[:n], 7, 3e-4, 0.9, 0.95, 1e-8, 0.1)
			return
		}
		wp, wm, wv := run("generic")
		for _, path := range Paths() {
			p, m, v := run(path)
			for i := 0; i < n+16; i++ {
				if p[i] != wp[i] || m[i] != wm[i] || v[i] != wv[i] {
					t.Fatalf("%s n=%d i=%d: p, m, v = %v %v %v, generic %v %v %v", path, n, i, p[i], m[i], v[i], wp[i], wm[i], wv[i])
				}
			}
		}
	}
}

func TestGradNormClip(t *testing.T) {
	r := rand.New(rand.NewSource(12))
	var grads [][]float32
	var ss float64
	for _, n := range oddSizes {
		g := randSlice(r, n*37, 1)
		grads = append(grads, g)
		for _, v := range g {
			ss += float64(v) * float64(v)
		}
	}
	want := math.Sqrt(ss)
	if got := GradNormClip(grads, 0); math.Abs(got-want) > 1e-9*want {
		t.Fatalf("norm %v want %v", got, want)
	}
	if got := GradNormClip(grads, 2*want); math.Abs(got-want) > 1e-9*want {
		t.Fatalf("norm %v want %v", got, want)
	}
	GradNormClip(grads, 1)
	if got := GradNormClip(grads, 0); math.Abs(got-1) > 1e-5 {
		t.Fatalf("clipped norm %v want 1", got)
	}
}

// TestNoAllocs checks that every kernel runs without allocating once its
// scratch has grown.
func TestNoAllocs(t *testing.T) {
	r := rand.New(rand.NewSource(13))
	const N, C, V, B, T, H = 256, 64, 96, 2, 100, 2
	a, b, c := randSlice(r, N*C, 1), randSlice(r, C*N, 1), make([]float32, N*N)
	x, g, out, rstd := randSlice(r, N*C, 1), randSlice(r, C, 1), make([]float32, N*C), make([]float32, N)
	dx, dg := make([]float32, N*C), make([]float32, C)
	ids := make([]int32, N)
	logits, dl := randSlice(r, N*V, 1), make([]float32, N*V)
	qkv, att, lse, dqkv := randSlice(r, B*T*3*C, 1), make([]float32, B*T*C), make([]float32, B*H*T), make([]float32, B*T*3*C)
	m, v := make([]float32, N*C), make([]float32, N*C)
	grads := [][]float32{dx, dg}
	fs := map[string]func(){
		"Sgemm":     func() { Sgemm(false, true, N, N, C, 1, a, C, b, C, 0, c, N) },
		"MatMulTN":  func() { MatMulTN(c[:C*C], a, b, C, C, N, true) },
		"Embedding": func() { EmbeddingForward(out, ids, x, C); EmbeddingBackward(dx, ids, out, C) },
		"RMSNorm":   func() { RMSNormForward(out, rstd, x, g, N, C); RMSNormBackward(dx, dg, out, x, g, rstd, N, C) },
		"GELU":      func() { QuickGELUForward(out, x); QuickGELUBackward(dx, x, out) },
		"CE":        func() { SoftmaxCrossEntropy(dl, logits, ids, V) },
		"Attention": func() {
			AttentionForward(att, lse, qkv, B, T, C, H, true)
			AttentionBackward(dqkv, att, att, lse, qkv, B, T, C, H, true)
		},
		"AdamW": func() { AdamW(x, dx, m, v, 1, 1e-3, 0.9, 0.95, 1e-8, 0) },
		"Clip":  func() { GradNormClip(grads, 1) },
	}
	forEachPath(t, func(t *testing.T) {
		for name, f := range fs {
			// Warm up more than AllocsPerRun's one run: tasks go to
			// whichever worker is free, and a worker grows its scratch the
			// first time it gets one (one warm-up left a worker without an
			// attention task in about 1 run in 20: "Attention: 1
			// allocations per run").
			for range 10 {
				f()
			}
			if n := testing.AllocsPerRun(5, f); n != 0 {
				t.Errorf("%s: %v allocations per run", name, n)
			}
		}
	})
}
