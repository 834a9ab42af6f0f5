//go:build amd64 && !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

//go:generate sh -c "go run ./asm/gen.go > kernels_amd64.s"

// AVX-512 micro-kernels, MRxNR, A row-addressed (r: A[i,p] at a[i*sa+p]) or
// column-addressed (c: A[i,p] at a[i+p*sa]); B packed k-major, NR wide.
// C[0:MR, 0:NR] (row stride ldc) = alpha*A·B, plus beta*C unless beta == 0.

//go:noescape
func k512_14x32r(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k512_14x32c(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k512_12x32r(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k512_12x32c(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k512_8x32r(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k512_8x32c(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k512_6x64r(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k512_6x64c(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

// AVX2+FMA micro-kernels, 6x16.

//go:noescape
func k256_6x16r(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

//go:noescape
func k256_6x16c(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)

// AVX512_BF16 micro-kernels, 14x32 over k-pairs (VDPBF16PS; see bf16Kernel).

//go:noescape
func kbf16_14x32r(kc2 int, a unsafe.Pointer, sa int, b unsafe.Pointer, c *float32, ldc int, alpha, beta float32)

//go:noescape
func kbf16_14x32c(kc2 int, a unsafe.Pointer, sa int, b unsafe.Pointer, c *float32, ldc int, alpha, beta float32)

// cvtBF16 rounds src[0:32*n32] to bf16 (VCVTNE2PS2BF16).
//
//go:noescape
func cvtBF16(dst *uint16, src *float32, n32 int)

// pairRows interleaves two bf16 rows into k-pairs: dst[j] = r0[j] | r1[j]<<16, j < 16*n16 (AVX-512F).
//
//go:noescape
func pairRows(dst *uint32, r0, r1 *uint16, n16 int)

// transpose8 transposes n8 8x8 blocks: dst[(8q+r)*ldd + s] = src[s*lds + 8q + r]
// for q < n8 and r, s < 8 (AVX).
//
//go:noescape
func transpose8(n8 int, src *float32, lds int, dst *float32, ldd int)

var hasAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// cpuHasBF16: CPUID leaf 7 subleaf 1, EAX bit 5 (AVX512_BF16).
var cpuHasBF16 = hasAVX512 && cpu.X86.HasAVX512BF16

// archPaths returns the assembly paths this CPU supports, slowest first.
func archPaths() []*impl {
	var ps []*impl
	if hasAVX2 {
		ps = append(ps, &impl{
			name: "avx2", mr: 6, nr: 16,
			row: k256_6x16r, col: k256_6x16c,
			transpose8: transpose8,
			vec:        &vecOps{8, false, expSubSum256, max256, geluFwd256, geluBwd256, nil, nil, nil},
		})
	}
	if hasAVX512 {
		ps = append(ps, &impl{
			name: "avx512", mr: 14, nr: 32,
			row: k512_14x32r, col: k512_14x32c,
			transpose8: transpose8, packRows: packRows32,
			vec: &vecOps{16, true, expSubSum512, max512, geluFwd512, geluBwd512,
				&rmsOps{sumSq512, scaleMul512, rmsBwdDot512, rmsBwdDx512}, adam512, subMul512},
			bf16: avx512BF16(),
		})
	}
	return ps
}

// avx512BF16 is the avx512 path's bf16 support, nil without AVX512_BF16
// or with IGPT_BF16=off.
func avx512BF16() *bf16Ops {
	if !cpuHasBF16 || bf16Off {
		return nil
	}
	return &bf16Ops{row: kbf16_14x32r, col: kbf16_14x32c, cvt: cvtBF16, pairRows: pairRows}
}

// Vector helpers (n a multiple of 16 for the 512 versions, 8 for 256,
// except expSubSum512 and max512, which take any n).

//go:noescape
func expSubSum512(x *float32, n int, sub float32) float32

//go:noescape
func expSubSum256(x *float32, n int, sub float32) float32

//go:noescape
func max512(x *float32, n int) float32

//go:noescape
func max256(x *float32, n int) float32

//go:noescape
func geluFwd512(y, x *float32, n int)

//go:noescape
func geluFwd256(y, x *float32, n int)

//go:noescape
func geluBwd512(dx, x, dy *float32, n int)

//go:noescape
func geluBwd256(dx, x, dy *float32, n int)

// RMS norm rows (any n; the tails under a lane mask), see rmsFuncs in
// asm/gen.go.

//go:noescape
func sumSq512(x *float32, n int) float32

//go:noescape
func scaleMul512(o, x, gain *float32, n int, r float32)

//go:noescape
func rmsBwdDot512(part, x, dy, gain *float32, n int, r float32) float32

//go:noescape
func rmsBwdDx512(dx, x, dy, gain *float32, n int, r, k float32)

// adam512 is one AdamW step over n values; see adamFunc in asm/gen.go.
//
//go:noescape
func adam512(p, grad, m, v *float32, n int, c *[9]float32)

// subMul512 sets s = s·(p − d) over n values; see subMulFunc in asm/gen.go.
//
//go:noescape
func subMul512(s, p *float32, n int, d float32)

// packRows32 copies rows rows of 32 floats, src row stride lds, to dst
// contiguously; see packRowsFunc in asm/gen.go.
//
//go:noescape
func packRows32(dst, src *float32, lds, rows int)
