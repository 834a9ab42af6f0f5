//go:build amd64 && !purego

package kernels

import (
	"fmt"
	"testing"
	"unsafe"
)

// BenchmarkMicroKernel runs each micro-kernel on L1/L2-resident operands:
// the ceiling of the GEMM (GFLOP/s of one core).
func BenchmarkMicroKernel(b *testing.B) {
	type kv struct {
		name   string
		mr, nr int
		f      gemmKernel
		ok     bool
	}
	ks := []kv{
		{"512_14x32r", 14, 32, k512_14x32r, hasAVX512},
		{"512_14x32c", 14, 32, k512_14x32c, hasAVX512},
		{"512_12x32r", 12, 32, k512_12x32r, hasAVX512},
		{"512_8x32r", 8, 32, k512_8x32r, hasAVX512},
		{"512_6x64r", 6, 64, k512_6x64r, hasAVX512},
		{"256_6x16r", 6, 16, k256_6x16r, hasAVX2},
	}
	const kc = 256
	for _, k := range ks {
		if !k.ok {
			continue
		}
		b.Run(k.name, func(b *testing.B) {
			a := make([]float32, k.mr*kc)
			bp := make([]float32, kc*k.nr)
			c := make([]float32, k.mr*k.nr)
			for i := range a {
				a[i] = 1e-3
			}
			for i := range bp {
				bp[i] = 1e-3
			}
			for i := 0; i < b.N; i++ {
				k.f(kc, &a[0], kc, &bp[0], &c[0], k.nr, 1, 1)
			}
			b.ReportMetric(2*float64(k.mr*k.nr*kc)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			_ = fmt.Sprint()
		})
	}
}

// BenchmarkMicroKernelBF16 runs the VDPBF16PS micro-kernels on L1/L2
// resident operands (kc = 512 k-steps, 256 pairs); FLOPs count 2 per
// multiply-add, as for fp32.
func BenchmarkMicroKernelBF16(b *testing.B) {
	if !cpuHasBF16 {
		b.Skip("no AVX512_BF16")
	}
	const mr, nr, kc2 = 14, 32, 256
	for _, k := range []struct {
		name string
		f    bf16Kernel
		sa   int
	}{{"bf16_14x32r", kbf16_14x32r, 2 * kc2}, {"bf16_14x32c", kbf16_14x32c, mr}} {
		b.Run(k.name, func(b *testing.B) {
			a := make([]uint32, mr*kc2)
			bp := make([]uint32, kc2*nr)
			c := make([]float32, mr*nr)
			for i := range a {
				a[i] = 0x3a833a83 // two bf16 1e-3
			}
			for i := range bp {
				bp[i] = 0x3a833a83
			}
			for i := 0; i < b.N; i++ {
				k.f(kc2, unsafe.Pointer(&a[0]), k.sa, unsafe.Pointer(&bp[0]), &c[0], nr, 1, 1)
			}
			b.ReportMetric(2*float64(mr*nr*2*kc2)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
