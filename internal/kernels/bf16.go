package kernels

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"unsafe"
)

// bfloat16 (bf16) is the upper half of a float32: sign, the 8-bit exponent
// and 7 mantissa bits (8 bits of precision with the implicit one). A bf16
// value is held in a uint16; a bf16 matrix is a []uint16 with a row stride,
// like a float32 one.
//
// SgemmBF16 multiplies bf16 matrices with fp32 accumulation. On a CPU with
// AVX512_BF16 (and the avx512 dispatch path) its micro-kernels use
// VDPBF16PS, which takes two k-steps per instruction: twice the fp32
// kernel's multiply-adds per cycle. Elsewhere (no AVX512_BF16, another path,
// IGPT_BF16=off) it widens the operands to float32, exactly, and runs the
// fp32 SGEMM: the same products, the same fp32 accumulation, the same error
// bound, at fp32 speed.

// BF16EnvVar names the environment variable that turns the AVX512_BF16
// kernels off: IGPT_BF16=off makes the process behave as on a CPU without
// the instruction (SgemmBF16 falls back to the fp32 kernels and CheckBF16
// fails). It is read once, at start-up.
const BF16EnvVar = "IGPT_BF16"

// BF16Flag is the CPU feature the bf16 kernels need, as CPUID and
// /proc/cpuinfo (avx512_bf16) name it.
const BF16Flag = "AVX512_BF16"

// bf16Ops is a dispatch path's bf16 support: micro-kernels of the path's
// mr×nr shape over k-pairs (see kernelBF16 in asm/gen.go) and the
// conversion and packing helpers.
type bf16Ops struct {
	row, col bf16Kernel
	// cvt writes bf16(src[i]) to dst[i] for i < 32·n32 (round to nearest even).
	cvt func(dst *uint16, src *float32, n32 int)
	// pairRows writes dst[j] = r0[j] | r1[j]<<16 for j < 16·n16.
	pairRows func(dst *uint32, r0, r1 *uint16, n16 int)
}

// bf16Kernel is a bf16 micro-kernel: C[0:mr, 0:nr] (row stride ldc) =
// alpha·A·B (+ beta·C unless beta == 0) over kc2 k-pairs. A's pair (i, q)
// is at byte a + 2·i·sa + 4·q (row: a bf16 matrix read in place) or at
// a + 4·(i + q·sa) (col: packed pairs); B's at b + 4·(q·nr + j).
type bf16Kernel func(kc2 int, a unsafe.Pointer, sa int, b unsafe.Pointer, c *float32, ldc int, alpha, beta float32)

// bf16Off records IGPT_BF16=off (or another value that is not "on"/"auto").
var bf16Off = parseBF16Env(os.Getenv(BF16EnvVar))

func parseBF16Env(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "on", "auto":
		return false
	case "off", "0", "false", "fp32":
		return true
	}
	fmt.Fprintf(os.Stderr, "kernels: %s=%q unknown (want on or off); bf16 kernels off\n", BF16EnvVar, v)
	return true
}

// HasBF16 reports whether SgemmBF16 runs on VDPBF16PS kernels (the CPU has
// AVX512_BF16, the avx512 path is in use and IGPT_BF16 is not off).
func HasBF16() bool { return cur.bf16 != nil }

// BF16Path names what SgemmBF16 runs on: "avx512_bf16" (VDPBF16PS) or
// "fp32" (operands widened to float32, the fp32 kernels of Path()).
func BF16Path() string {
	if HasBF16() {
		return "avx512_bf16"
	}
	return "fp32"
}

// CheckBF16 returns nil if bf16 arithmetic runs on the AVX512_BF16 kernels
// here, else an error naming the missing CPU flag (or what turned it off).
// Callers that offer a bf16 precision refuse it with this error: on the
// fallback the bf16 rounding would cost accuracy and buy no speed.
func CheckBF16() error {
	if HasBF16() {
		return nil
	}
	why := "which this CPU lacks; use fp32"
	switch {
	case cpuHasBF16 && bf16Off:
		why = fmt.Sprintf("which this CPU has but %s=off turns off; use fp32 or unset %s", BF16EnvVar, BF16EnvVar)
	case cpuHasBF16:
		why = fmt.Sprintf("which this CPU has but the %s kernel path in use lacks (%s); use fp32 or the avx512 path", cur.name, EnvVar)
	}
	return fmt.Errorf("bf16 needs the CPU flag %s (VDPBF16PS), %s", BF16Flag, why)
}

// LogDispatch logs the dispatch choice made at start-up from CPUID (and
// IGPT_KERNELS / IGPT_BF16): the fp32 path and what bf16 GEMMs run on.
func LogDispatch(log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	log.Info("kernels dispatch", "path", Path(), "bf16", BF16Path(), "cpu_avx512_bf16", cpuHasBF16, "threads", Threads())
}

// ToBF16 rounds src to bf16 into dst[:len(src)]: round to nearest, ties to
// even; NaNs stay NaN (quieted); denormals flush to signed zero, as
// VCVTNE2PS2BF16 does, so both paths give the same bits. It panics if dst
// is shorter than src.
//
// Large conversions are spread over the worker pool.
func ToBF16(dst []uint16, src []float32) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("kernels.ToBF16: len(dst) %d < len(src) %d", len(dst), len(src)))
	}
	if n := len(src); n >= 1<<16 {
		do(&theCvt, cvtJob{dst, src, chunks(n, 1)}, chunks(n, 1))
		return
	}
	toBF16Seq(dst, src)
}

type cvtJob struct {
	dst   []uint16
	src   []float32
	tasks int
}

var theCvt cvtJob

func (j *cvtJob) run(t, _ int) {
	lo, hi := span(t, j.tasks, len(j.src))
	lo, hi = lo&^31, hi&^31 // whole vectors but for the end
	if t == j.tasks-1 {
		hi = len(j.src)
	}
	if lo < hi {
		toBF16Seq(j.dst[lo:hi], j.src[lo:hi])
	}
}

// toBF16Seq is ToBF16 on the calling goroutine.
func toBF16Seq(dst []uint16, src []float32) {
	i := 0
	if bo := cur.bf16; bo != nil && len(src) >= 32 {
		n32 := len(src) / 32
		bo.cvt(&dst[0], &src[0], n32)
		i = 32 * n32
	}
	for ; i < len(src); i++ {
		dst[i] = RoundBF16(src[i])
	}
}

// FromBF16 widens src into dst[:len(src)] (exact).
func FromBF16(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
}

// RoundBF16 is ToBF16 for one value.
func RoundBF16(x float32) uint16 {
	b := math.Float32bits(x)
	switch {
	case b&0x7fffffff > 0x7f800000: // NaN: keep the sign and top bits, quiet it
		return uint16(b>>16) | 0x40
	case b&0x7f800000 == 0: // zero or denormal
		return uint16(b>>16) & 0x8000
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16ToFloat32 widens one bf16 value (exact).
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// SgemmBF16 is Sgemm on bf16 operands with fp32 accumulation and an fp32
// C: C[m,n] = alpha·op(A)·op(B) + beta·C, A, B []uint16 holding bf16 values
// in the layouts Sgemm documents (row strides lda, ldb counted in values).
// beta == 0 overwrites C without reading it. Its error, against the exact
// product of the bf16 values, is that of fp32 accumulation: the bf16
// products are exact in fp32. It panics if a slice is too short.
func SgemmBF16(transA, transB bool, m, n, k int, alpha float32, a []uint16, lda int, b []uint16, ldb int, beta float32, c []float32, ldc int) {
	ar, ac, br, bc := gemmShapes("SgemmBF16", transA, transB, m, n, k)
	checkMat("SgemmBF16", "A", a, ar, ac, lda)
	checkMat("SgemmBF16", "B", b, br, bc, ldb)
	checkMat("SgemmBF16", "C", c, m, n, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if cur.bf16 == nil {
		sgemmBF16Widened(transA, transB, m, n, k, alpha, a[:extent(ar, ac, lda)], lda, b[:extent(br, bc, ldb)], ldb, beta, c, ldc)
		return
	}
	runGemm(gemmJob{impl: cur, bf16: true, ta: transA, tb: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: unsafe.Pointer(unsafe.SliceData(a)), b: unsafe.Pointer(unsafe.SliceData(b)), c: unsafe.Pointer(unsafe.SliceData(c)),
		lda: lda, ldb: ldb, ldc: ldc})
}

// MatMulBF16 computes C[m,n] = A[m,k]·B[k,n] (bf16 A and B, contiguous);
// with accumulate, C += A·B.
func MatMulBF16(c []float32, a, b []uint16, m, n, k int, accumulate bool) {
	SgemmBF16(false, false, m, n, k, 1, a, k, b, n, beta(accumulate), c, n)
}

// MatMulNTBF16 computes C[m,n] = A[m,k]·B[n,k]ᵀ; with accumulate, C += A·Bᵀ.
func MatMulNTBF16(c []float32, a, b []uint16, m, n, k int, accumulate bool) {
	SgemmBF16(false, true, m, n, k, 1, a, k, b, k, beta(accumulate), c, n)
}

// MatMulTNBF16 computes C[m,n] = A[k,m]ᵀ·B[k,n]; with accumulate, C += Aᵀ·B.
func MatMulTNBF16(c []float32, a, b []uint16, m, n, k int, accumulate bool) {
	SgemmBF16(true, false, m, n, k, 1, a, m, b, n, beta(accumulate), c, n)
}

// extent is the number of values a rows×cols matrix with stride ld spans.
func extent(rows, cols, ld int) int {
	if rows == 0 || cols == 0 {
		return 0
	}
	return (rows-1)*ld + cols
}

// widened is the fallback's scratch: the operands as float32.
var widened struct {
	mu   sync.Mutex
	a, b []float32
}

// sgemmBF16Widened is SgemmBF16 without bf16 kernels: A and B widened to
// float32 (exactly, stride kept) and multiplied by Sgemm.
func sgemmBF16Widened(ta, tb bool, m, n, k int, alpha float32, a []uint16, lda int, b []uint16, ldb int, beta float32, c []float32, ldc int) {
	w := &widened
	w.mu.Lock()
	defer w.mu.Unlock()
	w.a, w.b = grow(w.a, len(a)), grow(w.b, len(b))
	FromBF16(w.a, a)
	FromBF16(w.b, b)
	Sgemm(ta, tb, m, n, k, alpha, w.a, lda, w.b, ldb, beta, c, ldc)
}
