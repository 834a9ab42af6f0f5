//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

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

// transpose8 transposes n8 8x8 blocks: dst[(8q+r)*ldd + s] = src[s*lds + 8q + r]
// for q < n8 and r, s < 8 (AVX).
//
//go:noescape
func transpose8(n8 int, src *float32, lds int, dst *float32, ldd int)

var hasAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// archPaths returns the assembly paths this CPU supports, slowest first.
func archPaths() []*impl {
	var ps []*impl
	if hasAVX2 {
		ps = append(ps, &impl{
			name: "avx2", mr: 6, nr: 16,
			row: k256_6x16r, col: k256_6x16c,
			transpose8: transpose8,
			vec:        &vecOps{8, expSubSum256, max256, geluFwd256, geluBwd256},
		})
	}
	if hasAVX512 {
		ps = append(ps, &impl{
			name: "avx512", mr: 14, nr: 32,
			row: k512_14x32r, col: k512_14x32c,
			transpose8: transpose8,
			vec:        &vecOps{16, expSubSum512, max512, geluFwd512, geluBwd512},
		})
	}
	return ps
}

// Vector helpers (n a multiple of 16 for the 512 versions, 8 for 256).

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
