// Package kernels holds the float32 compute kernels of igpt: a BLIS-style
// SGEMM and the transformer's primitives, each with its backward pass.
//
// SGEMM (Sgemm, MatMul, MatMulNT, MatMulTN) packs B into k-major panels,
// blocks for the caches, and runs register-blocked micro-kernels written in
// Go assembly: 14x32 for AVX-512, 6x16 for AVX2+FMA, chosen at start-up from
// the CPU's features (golang.org/x/sys/cpu), with a portable pure-Go 4x4
// fallback. IGPT_KERNELS=generic|avx2|avx512 forces a path, so every path
// can be tested on one machine. Nothing here uses cgo.
//
// SgemmBF16 is the same GEMM on bf16 operands ([]uint16, rounded by
// ToBF16 or by the producers that write bf16 directly) with fp32
// accumulation: on CPUs with AVX512_BF16 its 14x32 micro-kernels use
// VDPBF16PS (two k-steps per instruction, encoded as BYTE directives: the
// Go assembler has no mnemonic), elsewhere it widens to float32 and runs
// the fp32 kernels. IGPT_BF16=off turns the VDPBF16PS kernels off;
// CheckBF16 names the missing CPU flag, LogDispatch logs the choice.
//
// Work is spread over a persistent pool of Threads() workers (GOMAXPROCS by
// default, see SetThreads); kernels reuse per-worker scratch and do not
// allocate in steady state. Calls from several goroutines are serialised.
// ParallelFor opens the same pool to the rest of igpt (k-means passes, the
// Sampler's attention step): igpt has one parallel-for. Dense (tensor.go)
// wraps a []float32 as a gorgonia tensor without copying, the type in
// which named arrays cross package boundaries (see package model).
//
// Layouts are row-major and follow llm.c's conventions: activations are
// [B, T, C] (batch, time, channels), flattened to [N, C] with N = B·T where
// the position does not matter. Shapes are written in comments as [rows,
// cols].
package kernels
