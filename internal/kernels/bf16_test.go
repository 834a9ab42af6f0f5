package kernels

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Error bounds of SgemmBF16. Let u = 2^-24 (fp32's unit roundoff) and
// u_b = 2^-8 (bf16's: 8 significant bits, round to nearest even).
//
// On bf16 inputs (TestSgemmBF16Exact) a product of two bf16 values has at
// most 16 significant bits, so it is exact in fp32; what remains is fp32
// summation of k products and the alpha/beta update, any order (the
// kernel's pairs, the k blocks, the fallback's fp32 FMAs): by the
// recursive-summation bound,
//
//	|C - C_exact| <= (k+4)·u·(|alpha|·Σ_p |a_ip||b_pj| + |beta·c_ij|)
//
// On fp32 inputs rounded to bf16 (TestSgemmBF16VsFP32), each input moves by
// at most u_b relative, so each product by at most (2u_b + u_b²) relative;
// with the summation above:
//
//	|C - C_exact| <= c·2^-8·|alpha|·Σ_p |a_ip||b_pj| + (k+4)·u·|beta·c_ij|
//	c = 2 + 2^-8 + (k+4)·2^-16·(1+2^-8)²
//
// (c < 2.07 for k <= 4096.) The first bound is the one that catches kernel
// bugs: one k-pair dropped or doubled moves C by about Σ/k, far more than
// k·u·Σ for every k tested; the second, loose one is what bf16 costs.
func bf16Bound(k int) (exact, conv float64) {
	u := math.Ldexp(1, -24)
	exact = float64(k+4) * u
	c := 2 + math.Ldexp(1, -8) + float64(k+4)*math.Ldexp(1, -16)*math.Pow(1+math.Ldexp(1, -8), 2)
	return exact, c * math.Ldexp(1, -8)
}

// refAbs is refGemm's companion: |alpha|·Σ_p |op(A)[i,p]|·|op(B)[p,j]| + |beta·c_ij|.
func refAbs(ta, tb bool, m, n, k int, alpha float64, a []float32, lda int, b []float32, ldb int, beta float64, c []float32, ldc int) []float64 {
	abs := func(s []float32) []float32 {
		t := make([]float32, len(s))
		for i, v := range s {
			t[i] = float32(math.Abs(float64(v)))
		}
		return t
	}
	ca := abs(c)
	if beta == 0 {
		ca = make([]float32, len(c)) // C is not read (and holds NaNs)
	}
	return refGemm(ta, tb, m, n, k, math.Abs(alpha), abs(a), lda, abs(b), ldb, math.Abs(beta), ca, ldc)
}

func widen(s []uint16) []float32 {
	f := make([]float32, len(s))
	FromBF16(f, s)
	return f
}

func randBF16(r *rand.Rand, n int) []uint16 {
	s := make([]uint16, n)
	ToBF16(s, randSlice(r, n, 1))
	return s
}

// bf16Case draws a case's operands (A and B as fp32, plus their bf16
// rounding) and C (NaN when beta is 0: it must not be read).
type bf16Operands struct {
	a, b, c0           []float32
	a16, b16           []uint16
	lda, ldb, ldc      int
	ar, ac, br, bc, nc int
}

func drawBF16(r *rand.Rand, tc gemmCase) bf16Operands {
	o := bf16Operands{ar: tc.m, ac: tc.k, br: tc.k, bc: tc.n}
	if tc.ta {
		o.ar, o.ac = tc.k, tc.m
	}
	if tc.tb {
		o.br, o.bc = tc.n, tc.k
	}
	o.lda, o.ldb, o.ldc = o.ac+tc.pad, o.bc+tc.pad, tc.n+tc.pad
	o.a = randSlice(r, max(o.ar*o.lda, 1), 1)
	o.b = randSlice(r, max(o.br*o.ldb, 1), 1)
	o.c0 = randSlice(r, max(tc.m*o.ldc, 1), 1)
	if tc.beta == 0 {
		for i := range o.c0 {
			o.c0[i] = float32(math.NaN())
		}
	}
	o.a16, o.b16 = make([]uint16, len(o.a)), make([]uint16, len(o.b))
	ToBF16(o.a16, o.a)
	ToBF16(o.b16, o.b)
	return o
}

// checkC compares C with want within tol·scale[i,j] (+1e-30) and checks
// that the padding columns were not written.
func checkC(t *testing.T, what string, tc gemmCase, c, c0 []float32, ldc int, want, scale []float64, tol float64) {
	t.Helper()
	for i := 0; i < tc.m; i++ {
		for j := 0; j < ldc; j++ {
			got := c[i*ldc+j]
			if j >= tc.n {
				if math.Float32bits(got) != math.Float32bits(c0[i*ldc+j]) {
					t.Fatalf("%s %+v: C[%d,%d] (padding) written", what, tc, i, j)
				}
				continue
			}
			w, s := want[i*tc.n+j], scale[i*tc.n+j]
			if e := math.Abs(float64(got) - w); !(e <= tol*s+1e-30) { // NaN-safe
				t.Fatalf("%s %+v: C[%d,%d] = %v, want %v: error %.3g > bound %.3g (%.3g·%.3g)", what, tc, i, j, got, w, e, tol*s, tol, s)
			}
		}
	}
}

// checkGemmBF16 runs one case on the current path: on the bf16 values
// against float64 (tight bound), and on the fp32 values against float64
// and against the fp32 Sgemm (bf16 bound).
func checkGemmBF16(t *testing.T, r *rand.Rand, tc gemmCase) {
	t.Helper()
	o := drawBF16(r, tc)
	tight, conv := bf16Bound(tc.k)
	al, be := float64(tc.alpha), float64(tc.beta)
	c := make([]float32, len(o.c0))
	copy(c, o.c0)
	SgemmBF16(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, o.a16, o.lda, o.b16, o.ldb, tc.beta, c, o.ldc)
	what := Path() + "/" + BF16Path()

	a16, b16 := widen(o.a16), widen(o.b16)
	want16 := refGemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, al, a16, o.lda, b16, o.ldb, be, o.c0, o.ldc)
	checkC(t, what+" vs float64 of the bf16 inputs", tc, c, o.c0, o.ldc, want16,
		refAbs(tc.ta, tc.tb, tc.m, tc.n, tc.k, al, a16, o.lda, b16, o.ldb, be, o.c0, o.ldc), tight)

	// against the unrounded inputs: the bf16 bound on the product term,
	// the fp32 one on beta·C (the bound is split over two scales)
	want := refGemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, al, o.a, o.lda, o.b, o.ldb, be, o.c0, o.ldc)
	prod := refAbs(tc.ta, tc.tb, tc.m, tc.n, tc.k, al, o.a, o.lda, o.b, o.ldb, 0, o.c0, o.ldc)
	betaC := make([]float64, len(prod))
	for i := range tc.m {
		for j := range tc.n {
			if be != 0 {
				betaC[i*tc.n+j] = math.Abs(be * float64(o.c0[i*o.ldc+j]))
			}
		}
	}
	scale := make([]float64, len(prod))
	for i := range scale {
		scale[i] = prod[i] + tight/conv*betaC[i]
	}
	checkC(t, what+" vs float64 of the fp32 inputs", tc, c, o.c0, o.ldc, want, scale, conv)

	// against the fp32 kernel: both errors add
	c32 := make([]float32, len(o.c0))
	copy(c32, o.c0)
	Sgemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, o.a, o.lda, o.b, o.ldb, tc.beta, c32, o.ldc)
	got32 := make([]float64, tc.m*tc.n)
	for i := range tc.m {
		for j := range tc.n {
			got32[i*tc.n+j] = float64(c32[i*o.ldc+j])
			scale[i*tc.n+j] = prod[i*tc.n+j] + 2*tight/(conv+tight)*betaC[i*tc.n+j]
		}
	}
	checkC(t, what+" vs fp32 Sgemm", tc, c, o.c0, o.ldc, got32, scale, conv+tight)
}

// bf16Sizes: around the 14×32 tile (m 13, 14, 15, 29; n 31, 32, 33, 65),
// k = 1, 2, odd, around the unroll by 4 pairs (7, 8, 9, 17) and past
// blockKBF16 (513, 1025, odd: a ragged odd last block).
var (
	bf16M = []int{1, 13, 14, 15, 29, 43}
	bf16N = []int{1, 16, 31, 32, 33, 65}
	bf16K = []int{1, 2, 3, 7, 8, 9, 16, 17, 33, 513}
)

// TestSgemmBF16Sizes: every layout, the sizes above, three alpha/beta
// pairs, strides padded by an odd and an even amount (odd strides take the
// scalar transposes, even ones transpose8), on every dispatch path (the
// VDPBF16PS kernels where the CPU has them, the fp32 fallback on the others).
func TestSgemmBF16Sizes(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(11))
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, m := range bf16M {
					for _, n := range bf16N {
						for _, k := range bf16K {
							for i, ab := range [][2]float32{{1, 0}, {1, 1}, {-0.5, 0.25}} {
								pad := []int{0, 1, 2}[(m+n+k+i)%3]
								checkGemmBF16(t, r, gemmCase{ta, tb, m, n, k, ab[0], ab[1], pad})
							}
						}
					}
				}
			}
		}
	})
}

// TestSgemmBF16Blocks shrinks the cache blocks so that small sizes cross
// every block edge: several k blocks (beta then 1), N blocks, M blocks with
// in-place rows, packed edge rows and ragged tiles, and threads splitting
// M or N.
func TestSgemmBF16Blocks(t *testing.T) {
	defer func(k, n, m int) { blockKBF16, blockN, blockMR = k, n, m }(blockKBF16, blockN, blockMR)
	blockKBF16, blockN, blockMR = 10, 64, 2
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(12))
		for _, th := range []int{1, 2, 3} {
			old := SetThreads(th)
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					for _, sz := range [][3]int{{61, 97, 23}, {100, 129, 40}, {29, 200, 21}, {300, 70, 37}} {
						checkGemmBF16(t, r, gemmCase{ta, tb, sz[0], sz[1], sz[2], 1, 0.5, sz[2] % 3})
					}
				}
			}
			SetThreads(old)
		}
	})
}

// TestSgemmBF16Large: transformer-like shapes at full size, two threads.
func TestSgemmBF16Large(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	defer SetThreads(SetThreads(2))
	r := rand.New(rand.NewSource(13))
	for _, tc := range []gemmCase{
		{false, false, 700, 530, 1100, 1, 0, 0},
		{false, true, 700, 530, 1100, 1, 1, 2},
		{true, false, 530, 700, 1101, 1, 1, 1},
		{true, true, 257, 513, 1025, -1, 0.5, 0},
	} {
		checkGemmBF16(t, r, tc)
	}
}

// TestSgemmBF16ZeroK: k = 0 or alpha = 0 scales C by beta, as Sgemm does.
func TestSgemmBF16ZeroK(t *testing.T) {
	c := []float32{1, 2, 3, 4}
	SgemmBF16(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0.5, c, 2)
	if fmt.Sprint(c) != "[0.5 1 1.5 2]" {
		t.Fatal(c)
	}
	SgemmBF16(false, false, 2, 2, 1, 0, []uint16{1, 2}, 1, []uint16{1, 2}, 2, 0, c, 2)
	if fmt.Sprint(c) != "[0 0 0 0]" {
		t.Fatal(c)
	}
}

// TestToBF16 checks the conversion on every path (VCVTNE2PS2BF16 on the
// avx512 path with AVX512_BF16, RoundBF16 elsewhere and for tails) against
// a float64 definition of round-to-nearest-even: random bit patterns
// (NaNs, infinities, denormals included), ties, and values that round up
// to the next binade or to infinity.
func TestToBF16(t *testing.T) {
	r := rand.New(rand.NewSource(14))
	var src []float32
	for _, b := range []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff,
		0x00000001, 0x807fffff, 0x00800000, 0x7f7fffff, 0x7f7f8000, 0x7f7f7fff, 0x3f808000, 0x3f818000,
		0x3f80ffff, 0x3fff8000, 0x3fffffff, 0xbf808001} {
		src = append(src, math.Float32frombits(b))
	}
	for len(src) < 1<<16+7 {
		switch len(src) % 3 {
		case 0:
			src = append(src, math.Float32frombits(r.Uint32()))
		case 1:
			src = append(src, math.Float32frombits(r.Uint32()&0xffff8000|0x8000*uint32(r.Intn(2)))) // ties and near-ties
		default:
			src = append(src, float32(r.NormFloat64()))
		}
	}
	forEachPath(t, func(t *testing.T) {
		for _, off := range []int{0, 3} { // an unaligned start and a ragged tail
			s := src[off:]
			got := make([]uint16, len(s))
			ToBF16(got, s)
			for i, x := range s {
				if want := refBF16(x); got[i] != want || RoundBF16(x) != want {
					t.Fatalf("%s: bf16(%#08x) = %#04x (scalar %#04x), want %#04x", Path(), math.Float32bits(x), got[i], RoundBF16(x), want)
				}
			}
		}
	})
}

// refBF16 rounds x to the nearest bf16 by comparing the two neighbours in
// float64 (ties to the even mantissa); denormals flush to signed zero and
// NaNs are quieted, as VCVTNE2PS2BF16 does.
func refBF16(x float32) uint16 {
	b := math.Float32bits(x)
	if x != x {
		return uint16(b>>16) | 0x40
	}
	if b&0x7f800000 == 0 {
		return uint16(b>>16) & 0x8000
	}
	lo := uint16(b >> 16)
	if uint32(lo)<<16 == b || b&0x7fffffff == 0x7f800000 {
		return lo
	}
	hi := lo + 1 // away from zero; 0x7f7f+1 is infinity
	dl := math.Abs(float64(x) - float64(math.Float32frombits(uint32(lo)<<16)))
	dh := math.Abs(float64(math.Float32frombits(uint32(hi)<<16)) - float64(x))
	if hi&0x7fff == 0x7f80 { // infinity: the neighbour is 2^128 for rounding purposes
		dh = math.Abs(math.Copysign(math.Ldexp(1, 128), float64(x)) - float64(x))
	}
	if dl < dh || dl == dh && lo&1 == 0 {
		return lo
	}
	return hi
}

// TestBF16Fallback forces the fp32 fallback in a fresh process
// (IGPT_BF16=off) and checks that it is the one used, that CheckBF16 then
// names the CPU flag, and that SgemmBF16 still meets its bound there.
func TestBF16Fallback(t *testing.T) {
	if os.Getenv("IGPT_BF16_CHILD") != "" {
		fmt.Printf("bf16path=%s has=%v\n", BF16Path(), HasBF16())
		fmt.Printf("check=%v\n", CheckBF16())
		r := rand.New(rand.NewSource(15))
		checkGemmBF16(t, r, gemmCase{true, false, 45, 70, 33, 1, 1, 1})
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBF16Fallback$", "-test.v")
	cmd.Env = append(os.Environ(), "IGPT_BF16_CHILD=1", BF16EnvVar+"=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "bf16path=fp32 has=false\n") {
		t.Fatalf("%s=off: child reports %q", BF16EnvVar, s)
	}
	want := "check=bf16 needs the CPU flag AVX512_BF16 (VDPBF16PS), which this CPU lacks; use fp32"
	if cpuHasBF16 {
		want = "check=bf16 needs the CPU flag AVX512_BF16 (VDPBF16PS), which this CPU has but IGPT_BF16=off turns off"
	}
	if !strings.Contains(s, want) {
		t.Fatalf("%s=off: CheckBF16 in the child: %q, want %q", BF16EnvVar, s, want)
	}
	// in this process: the paths without bf16 kernels report the fallback
	for _, p := range Paths() {
		old, _ := SetPath(p)
		has, path, err := HasBF16(), BF16Path(), CheckBF16()
		SetPath(old)
		if p != "avx512" && (has || path != "fp32" || err == nil) {
			t.Fatalf("path %s: HasBF16 %v, BF16Path %q, CheckBF16 %v", p, has, path, err)
		}
		if p == "avx512" && has != (cpuHasBF16 && !bf16Off) {
			t.Fatalf("avx512: HasBF16 %v with cpu flag %v, %s off %v", has, cpuHasBF16, BF16EnvVar, bf16Off)
		}
	}
	t.Logf("this CPU: %s=%v; default bf16 path %s", BF16Flag, cpuHasBF16, BF16Path())
}

// TestLogDispatch checks the start-up line: the fp32 path and the bf16 one.
func TestLogDispatch(t *testing.T) {
	var buf bytes.Buffer
	LogDispatch(slog.New(slog.NewTextHandler(&buf, nil)))
	s := buf.String()
	want := "bf16=" + BF16Path()
	if !strings.Contains(s, "msg=\"kernels dispatch\"") || !strings.Contains(s, "path="+Path()) || !strings.Contains(s, want) {
		t.Fatalf("dispatch log %q lacks path=%s or %s", s, Path(), want)
	}
	if cpuHasBF16 && !bf16Off && Path() == "avx512" && !strings.Contains(s, "bf16=avx512_bf16") {
		t.Fatalf("CPU has AVX512_BF16 but the log says %q", s)
	}
}

// TestFusedBF16Producers: the producers that write bf16 directly
// (RMSNormForwardBF16, QuickGELUForwardBF16, QuickGELUBackwardBF16) give
// bit for bit ToBF16 of their fp32 versions, on every path, at sizes that
// cut into several tasks and scratch tiles with ragged ends.
func TestFusedBF16Producers(t *testing.T) {
	r := rand.New(rand.NewSource(16))
	forEachPath(t, func(t *testing.T) {
		same := func(what string, got []uint16, want32 []float32) {
			t.Helper()
			want := make([]uint16, len(want32))
			ToBF16(want, want32)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s[%d] = %#04x, want %#04x (bf16 of %v)", what, i, got[i], want[i], want32[i])
				}
			}
		}
		for _, sz := range [][2]int{{1, 1}, {37, 45}, {300, 256}, {1029, 64}} {
			N, C := sz[0], sz[1]
			x, g := randSlice(r, N*C, 3), randSlice(r, C, 1)
			out, rstd, rstd16, out16 := make([]float32, N*C), make([]float32, N), make([]float32, N), make([]uint16, N*C)
			RMSNormForward(out, rstd, x, g, N, C)
			RMSNormForwardBF16(out16, rstd16, x, g, N, C)
			same(fmt.Sprintf("rmsnorm %dx%d", N, C), out16, out)
			for i := range rstd {
				if rstd[i] != rstd16[i] {
					t.Fatalf("rstd[%d] = %v, want %v", i, rstd16[i], rstd[i])
				}
			}
		}
		for _, n := range []int{1, 15, 17, 1000, 1025, 100003} {
			x, dy := randSlice(r, n, 4), randSlice(r, n, 1)
			y, y16 := make([]float32, n), make([]uint16, n)
			QuickGELUForward(y, x)
			QuickGELUForwardBF16(y16, x)
			same(fmt.Sprintf("gelu fwd n=%d", n), y16, y)
			QuickGELUBackward(y, x, dy)
			QuickGELUBackwardBF16(y16, x, dy)
			same(fmt.Sprintf("gelu bwd n=%d", n), y16, y)
		}
	})
}

// TestSgemmBF16AliasedStride: bf16 A rows a multiple of 4 KiB apart are
// packed instead of read in place (aliasedStride).
func TestSgemmBF16AliasedStride(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(14))
		for _, tc := range []gemmCase{
			{false, false, 400, 70, 300, 1, 0, 2048 - 300},
			{false, true, 45, 97, 1000, 1, 1, 4096 - 1000},
		} {
			if !aliasedStride(tc.k+tc.pad, 2) {
				t.Fatalf("case %+v: lda %d is not 4 KiB-aliased", tc, tc.k+tc.pad)
			}
			checkGemmBF16(t, r, tc)
		}
	})
}
