package kernels

import (
	"fmt"
	"math/rand"
	"runtime"
	"testing"
)

// benchShapes are the shapes of ../shared/bench/sgemm_openblas.c (row-major
// C[M,N] = op(A)[M,K]·op(B)[K,N]).
func benchShapes() []struct {
	name    string
	m, n, k int
	ta, tb  bool
} {
	type sh = struct {
		name    string
		m, n, k int
		ta, tb  bool
	}
	s := []sh{{"square1024", 1024, 1024, 1024, false, false}, {"square2048", 2048, 2048, 2048, false, false}}
	for d := 256; d <= 512; d *= 2 {
		for _, f := range []struct {
			name    string
			in, out int
		}{{"qkv", d, 3 * d}, {"attnproj", d, d}, {"fc", d, 4 * d}, {"fcproj", 4 * d, d}, {"lmhead", d, 512}} {
			s = append(s, sh{fmt.Sprintf("d%d.%s", d, f.name), 4096, f.out, f.in, false, false},
				sh{fmt.Sprintf("d%d.%s.dW", d, f.name), f.in, f.out, 4096, true, false},
				sh{fmt.Sprintf("d%d.%s.dX", d, f.name), 4096, f.in, f.out, false, true})
		}
	}
	for T := 256; T <= 1024; T *= 4 {
		s = append(s, sh{fmt.Sprintf("attn.T%d.QKT", T), T, T, 64, false, true}, sh{fmt.Sprintf("attn.T%d.PV", T), T, 64, T, false, false})
	}
	return s
}

// BenchmarkSgemm reports GFLOP/s per shape for 1 and 2 threads:
//
//	go test -run XXX -bench Sgemm ./internal/kernels
func BenchmarkSgemm(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	for _, sh := range benchShapes() {
		a := randSlice(r, sh.m*sh.k, 1)
		bb := randSlice(r, sh.k*sh.n, 1)
		c := make([]float32, sh.m*sh.n)
		lda, ldb := sh.k, sh.n
		if sh.ta {
			lda = sh.m
		}
		if sh.tb {
			ldb = sh.k
		}
		for _, th := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads=%d", sh.name, th), func(b *testing.B) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(th, runtime.GOMAXPROCS(0))))
				defer SetThreads(SetThreads(th))
				for i := 0; i < b.N; i++ {
					Sgemm(sh.ta, sh.tb, sh.m, sh.n, sh.k, 1, a, lda, bb, ldb, 0, c, sh.n)
				}
				b.ReportMetric(2*float64(sh.m*sh.n*sh.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkSgemmBF16 is BenchmarkSgemm for SgemmBF16 (bf16 operands, fp32
// accumulation; the VDPBF16PS kernels where the CPU has them):
//
//	go test -run XXX -bench 'Sgemm(BF16)?/' ./internal/kernels
func BenchmarkSgemmBF16(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	for _, sh := range benchShapes() {
		a := make([]uint16, sh.m*sh.k)
		bb := make([]uint16, sh.k*sh.n)
		ToBF16(a, randSlice(r, len(a), 1))
		ToBF16(bb, randSlice(r, len(bb), 1))
		c := make([]float32, sh.m*sh.n)
		lda, ldb := sh.k, sh.n
		if sh.ta {
			lda = sh.m
		}
		if sh.tb {
			ldb = sh.k
		}
		for _, th := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads=%d", sh.name, th), func(b *testing.B) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(th, runtime.GOMAXPROCS(0))))
				defer SetThreads(SetThreads(th))
				for i := 0; i < b.N; i++ {
					SgemmBF16(sh.ta, sh.tb, sh.m, sh.n, sh.k, 1, a, lda, bb, ldb, 0, c, sh.n)
				}
				b.ReportMetric(2*float64(sh.m*sh.n*sh.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkAttention times fused attention forward+backward at B8 H4 T1024 hd64.
func BenchmarkAttention(b *testing.B) {
	const B, H, T, hd = 8, 4, 1024, 64
	const C = H * hd
	r := rand.New(rand.NewSource(2))
	qkv, dout := randSlice(r, B*T*3*C, 2), randSlice(r, B*T*C, 1)
	out, lse, dqkv := make([]float32, B*T*C), make([]float32, B*H*T), make([]float32, B*T*3*C)
	for _, causal := range []bool{true, false} {
		for _, th := range []int{1, 2} {
			b.Run(fmt.Sprintf("causal=%v/threads=%d", causal, th), func(b *testing.B) {
				defer SetThreads(SetThreads(th))
				for i := 0; i < b.N; i++ {
					AttentionForward(out, lse, qkv, B, T, C, H, causal)
					AttentionBackward(dqkv, dout, out, lse, qkv, B, T, C, H, causal)
				}
			})
		}
	}
}

// BenchmarkPrimitives times the element-wise kernels at N = 4096 tokens.
func BenchmarkPrimitives(b *testing.B) {
	const N, C, V = 4096, 512, 512
	r := rand.New(rand.NewSource(3))
	x, g, out, rstd := randSlice(r, N*4*C, 1), randSlice(r, C, 1), make([]float32, N*4*C), make([]float32, N)
	dx, dg := make([]float32, N*4*C), make([]float32, C)
	logits, dl := randSlice(r, N*V, 3), make([]float32, N*V)
	ids := make([]int32, N)
	for i := range ids {
		ids[i] = int32(r.Intn(V))
	}
	m, v := make([]float32, N*C), make([]float32, N*C)
	bs := []struct {
		name string
		f    func()
	}{
		{"RMSNormFwd", func() { RMSNormForward(out, rstd, x, g, N, C) }},
		{"RMSNormBwd", func() { RMSNormBackward(dx, dg, out, x, g, rstd, N, C) }},
		{"GELUFwd_4C", func() { QuickGELUForward(out, x) }},
		{"GELUBwd_4C", func() { QuickGELUBackward(dx, x, out) }},
		{"CrossEntropy", func() { SoftmaxCrossEntropy(dl, logits, ids, V) }},
		{"EmbeddingFwd", func() { EmbeddingForward(out, ids, x[:V*C], C) }},
		{"EmbeddingBwd", func() { EmbeddingBackward(dx[:V*C], ids, out, C) }},
		{"AdamW_2M", func() { AdamW(x[:N*C], dx[:N*C], m, v, 3, 1e-3, 0.9, 0.95, 1e-8, 0.1) }},
	}
	for _, bc := range bs {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				bc.f()
			}
		})
	}
}
