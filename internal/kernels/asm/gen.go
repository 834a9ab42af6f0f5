//go:build ignore

// gen.go writes kernels_amd64.s, the Go assembly of package kernels: the
// register-blocked SGEMM micro-kernels for AVX-512 and AVX2+FMA, the 8x8
// transposing packer, and the vector exp/max helpers of the softmaxes.
//
// Run from internal/kernels:  go run ./asm/gen.go > kernels_amd64.s
// (also wired as go:generate in kernels_amd64.go). It has no dependencies.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

var out strings.Builder

func p(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }

type isa struct {
	name  string // "512" or "256"
	reg   string // "Z" or "Y"
	width int    // floats per vector
	regs  int    // vector registers
}

var avx512 = isa{"512", "Z", 16, 32}
var avx2 = isa{"256", "Y", 8, 16}

// rowAddr returns the address of A[i, p] for the row-addressed kernels
// (A[i,p] at a + i*rs + p*4): a base register holding a + b*rs, b a
// multiple of 3, plus rs (R13) scaled by 1, 2, 4 or 8.
func rowAddr(i, disp int) string {
	bases := []string{"R8", "R9", "R10", "R11", "R12"}
	for b := 0; b <= i; b += 3 {
		s := i - b
		reg := bases[b/3]
		switch s {
		case 0:
			return fmt.Sprintf("%d(%s)", disp, reg)
		case 1, 2, 4, 8:
			return fmt.Sprintf("%d(%s)(R13*%d)", disp, reg, s)
		}
	}
	panic("no address")
}

func nBases(mr int) int { return (mr-1)/3 + 1 }

// kernel emits func NAME(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)
//
//	C[mr x nr] = alpha * A·B (+ beta*C if beta != 0), A[i,p] at a[i*sa+p] (row) or a[i+p*sa] (col),
//	B packed k-major: b[p*nr + j].
func kernel(v isa, mr, nr int, col bool) {
	k := newKgen(v, mr, nr, col, false)
	k.prologue()
	k.loops()
	k.store()
}

// kernelBF16 emits the AVX512_BF16 variant, func NAME(kc2 int, a unsafe.Pointer, sa int, b unsafe.Pointer, c *float32, ldc int, alpha, beta float32):
// the same loop over kc2 k-pairs instead of kc steps, each step one
// VDPBF16PS per accumulator instead of one FMA. A 32-bit lane of A or B
// holds a k-pair of bf16 values (even k in the low half):
//
//	row: pair (i, q) at byte a + 2*i*sa + 4*q  (A a row-major bf16 matrix, stride sa)
//	col: pair (i, q) at byte a + 4*(i + q*sa)   (A packed in pairs, sa pairs apart)
//	B:   pair (q, j) at byte b + 4*(q*nr + j)
//
// C[i, j] = alpha·Σ_q dot(A pair (i,q), B pair (q,j)) (+ beta·C), accumulated in fp32.
func kernelBF16(mr, nr int, col bool) {
	k := newKgen(avx512, mr, nr, col, true)
	k.prologue()
	k.loops()
	k.store()
}

// evex512 encodes the register form of an EVEX.512.pp.0F38.W0 instruction
// (no mask, no broadcast) as BYTE directives, for the AVX512_BF16
// instructions the Go assembler has no mnemonic for:
//
//	62 P0 P1 P2 op ModRM
//	P0 = R̄ X̄ B̄ R̄' 0 0 1 0   (map 0F38; R, R' extend ModRM.reg = dst; X, B extend ModRM.rm = src2)
//	P1 = W=0 v̄v̄v̄v̄ 1 pp     (vvvv = src1, inverted; 1111 when unused)
//	P2 = z=0 L'L=10 b=0 V̄' aaa=000   (V' = bit 4 of src1, inverted)
//	ModRM = 11 dst[2:0] src2[2:0]
//
// dst, src1, src2 are register numbers 0..31 (src1 < 0: no vvvv operand).
// pp is 2 for F3, 3 for F2.
func evex512(pp, op byte, dst, src1, src2 int) string {
	inv := func(x int, bit uint) byte { return byte(^(x >> bit)) & 1 }
	if src1 < 0 {
		src1 = 0 // encodes as vvvv = 1111, V' = 1: no operand
	}
	b := []byte{
		0x62,
		inv(dst, 3)<<7 | inv(src2, 4)<<6 | inv(src2, 3)<<5 | inv(dst, 4)<<4 | 0x02,
		byte(^src1&0xf)<<3 | 1<<2 | pp,
		2<<5 | inv(src1, 4)<<3,
		op,
		0xc0 | byte(dst&7)<<3 | byte(src2&7),
	}
	s := make([]string, len(b))
	for i, x := range b {
		s[i] = fmt.Sprintf("BYTE $0x%02x", x)
	}
	return strings.Join(s, "; ")
}

// vdpbf16ps emits VDPBF16PS Z<src2>, Z<src1>, Z<dst> (Go operand order):
// dst.fp32[i] += src1.bf16[2i+1]·src2.bf16[2i+1], then += src1.bf16[2i]·src2.bf16[2i]
// (EVEX.512.F3.0F38.W0 52 /r).
func vdpbf16ps(src2, src1, dst string) {
	p("	%s // VDPBF16PS %s, %s, %s", evex512(2, 0x52, regNum(dst), regNum(src1), regNum(src2)), src2, src1, dst)
}

// vcvtne2ps2bf16 emits VCVTNE2PS2BF16 Z<src2>, Z<src1>, Z<dst>: dst.bf16[i] =
// RNE(src2[i]) for i < 16, RNE(src1[i-16]) above (EVEX.512.F2.0F38.W0 72 /r).
func vcvtne2ps2bf16(src2, src1, dst string) {
	p("	%s // VCVTNE2PS2BF16 %s, %s, %s", evex512(3, 0x72, regNum(dst), regNum(src1), regNum(src2)), src2, src1, dst)
}

// vcvtneps2bf16 emits VCVTNEPS2BF16 Z<src>, Y<dst>: dst.bf16[i] = RNE(src[i])
// (EVEX.512.F3.0F38.W0 72 /r).
func vcvtneps2bf16(src, dst string) {
	p("	%s // VCVTNEPS2BF16 %s, %s", evex512(2, 0x72, regNum(dst), -1, regNum(src)), src, dst)
}

// regNum is the number of a vector register named like "Z17" or "Y3".
func regNum(r string) int {
	n, err := strconv.Atoi(r[1:])
	if err != nil || n < 0 || n > 31 {
		panic("bad register " + r)
	}
	return n
}

// kgen emits one micro-kernel: mr rows × nr columns of C in nv vectors
// per row, accumulated in registers 0..nacc-1; B's vectors follow, then
// two temporaries.
type kgen struct {
	v          isa
	mr, nr, nv int
	nacc       int
	col        bool
	bf16       bool // k-pairs of bf16 and VDPBF16PS (see kernelBF16)
	name       string
}

func newKgen(v isa, mr, nr int, col, bf16 bool) *kgen {
	nv := nr / v.width
	k := &kgen{v: v, mr: mr, nr: nr, nv: nv, nacc: mr * nv, col: col, bf16: bf16}
	if k.nacc+nv+2 > v.regs {
		panic("too many registers")
	}
	mode := "r"
	if col {
		mode = "c"
	}
	k.name = fmt.Sprintf("k%s_%dx%d%s", v.name, mr, nr, mode)
	if bf16 {
		k.name = fmt.Sprintf("kbf16_%dx%d%s", mr, nr, mode)
	}
	return k
}

func (k *kgen) acc(i, j int) string { return fmt.Sprintf("%s%d", k.v.reg, i*k.nv+j) }
func (k *kgen) breg(j int) string   { return fmt.Sprintf("%s%d", k.v.reg, k.nacc+j) }
func (k *kgen) tmp(t int) string    { return fmt.Sprintf("%s%d", k.v.reg, k.nacc+k.nv+t) }

// rowRegs are the base registers of A's rows (three rows per base).
var rowRegs = []string{"R8", "R9", "R10", "R11", "R12"}

// prologue loads the arguments, zeroes the accumulators, sets up A's base
// registers and prefetches the C tile.
func (k *kgen) prologue() {
	name := k.name
	p("")
	shift := 2 // sa counts floats (or bf16 pairs, col)
	if k.bf16 {
		p("// func %s(kc2 int, a unsafe.Pointer, sa int, b unsafe.Pointer, c *float32, ldc int, alpha, beta float32)", name)
		if !k.col {
			shift = 1 // sa counts bf16 values
		}
	} else {
		p("// func %s(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32)", name)
	}
	p("TEXT ·%s(SB), NOSPLIT, $0-56", name)
	if k.bf16 {
		p("\tMOVQ kc2+0(FP), CX")
	} else {
		p("\tMOVQ kc+0(FP), CX")
	}
	p("\tMOVQ a+8(FP), R8")
	p("\tMOVQ sa+16(FP), R13")
	p("\tSHLQ $%d, R13", shift)
	p("\tMOVQ b+24(FP), BX")
	for i := 0; i < k.nacc; i++ {
		if k.v.name == "512" {
			p("\tVPXORD Z%d, Z%d, Z%d", i, i, i)
		} else {
			p("\tVXORPS Y%d, Y%d, Y%d", i, i, i)
		}
	}
	if k.col {
		// u=0: (R8), u=1: (R8)(R13*1), u=2: (R8)(R13*2), u=3: (R9) with R9 = a+3*cs; R10 = 4*cs.
		p("\tLEAQ (R8)(R13*2), R9")
		p("\tADDQ R13, R9")
		p("\tLEAQ (R13*4), R10")
	} else {
		for b := 1; b < nBases(k.mr); b++ {
			p("\tLEAQ (%s)(R13*2), %s", rowRegs[b-1], rowRegs[b])
			p("\tADDQ R13, %s", rowRegs[b])
		}
	}
	// prefetch the C tile
	p("\tMOVQ c+32(FP), DI")
	p("\tMOVQ ldc+40(FP), AX")
	p("\tSHLQ $2, AX")
	for i := 0; i < k.mr; i++ {
		for off := 0; off < k.nr*4; off += 64 {
			p("\tPREFETCHT0 %d(DI)", off)
		}
		p("\tPREFETCHT0 %d(DI)", k.nr*4-1)
		p("\tADDQ AX, DI")
	}
}

// body emits step u (0..3) of the k loop: one rank-1 update.
func (k *kgen) body(u int) {
	for j := 0; j < k.nv; j++ {
		p("\tVMOVUPS %d(BX), %s", (u*k.nr+j*k.v.width)*4, k.breg(j))
	}
	for i := 0; i < k.mr; i++ {
		var addr string
		if k.col {
			switch u {
			case 0:
				addr = fmt.Sprintf("%d(R8)", i*4)
			case 1:
				addr = fmt.Sprintf("%d(R8)(R13*1)", i*4)
			case 2:
				addr = fmt.Sprintf("%d(R8)(R13*2)", i*4)
			case 3:
				addr = fmt.Sprintf("%d(R9)", i*4)
			}
		} else {
			addr = rowAddr(i, u*4)
		}
		t := k.tmp(i % 2)
		p("\tVBROADCASTSS %s, %s", addr, t) // one float, or one bf16 pair
		for j := 0; j < k.nv; j++ {
			if k.bf16 {
				vdpbf16ps(t, k.breg(j), k.acc(i, j))
			} else {
				p("\tVFMADD231PS %s, %s, %s", t, k.breg(j), k.acc(i, j))
			}
		}
	}
}

// loops emits the k loop unrolled by 4, then the remainder one at a time.
func (k *kgen) loops() {
	name, nr := k.name, k.nr
	p("\tMOVQ CX, DX")
	p("\tSHRQ $2, DX")
	p("\tJZ %s_tail", name)
	p("%s_loop4:", name)
	for u := 0; u < 4; u++ {
		k.body(u)
	}
	p("\tADDQ $%d, BX", 4*nr*4)
	if k.col {
		p("\tADDQ R10, R8")
		p("\tADDQ R10, R9")
	} else {
		for b := 0; b < nBases(k.mr); b++ {
			p("\tADDQ $16, %s", rowRegs[b])
		}
	}
	p("\tDECQ DX")
	p("\tJNZ %s_loop4", name)
	p("%s_tail:", name)
	p("\tANDQ $3, CX")
	p("\tJZ %s_store", name)
	p("%s_loop1:", name)
	k.body(0)
	p("\tADDQ $%d, BX", nr*4)
	if k.col {
		p("\tADDQ R13, R8")
	} else {
		for b := 0; b < nBases(k.mr); b++ {
			p("\tADDQ $4, %s", rowRegs[b])
		}
	}
	p("\tDECQ CX")
	p("\tJNZ %s_loop1", name)
}

// store emits C = alpha·acc + beta·C, or alpha·acc when beta is 0.
func (k *kgen) store() {
	name, nv := k.name, k.nv
	p("%s_store:", name)
	p("\tMOVQ c+32(FP), DI")
	al, be := k.breg(0), k.breg(nv-1)
	if nv == 1 {
		be = k.tmp(0)
	}
	p("\tVBROADCASTSS alpha+48(FP), %s", al)
	p("\tMOVL beta+52(FP), DX")
	p("\tANDL $0x7fffffff, DX")
	p("\tJZ %s_over", name)
	p("\tVBROADCASTSS beta+52(FP), %s", be)
	for i := 0; i < k.mr; i++ {
		for j := 0; j < nv; j++ {
			p("\tVMULPS %s, %s, %s", al, k.acc(i, j), k.acc(i, j))
			p("\tVFMADD231PS %d(DI), %s, %s", j*k.v.width*4, be, k.acc(i, j))
			p("\tVMOVUPS %s, %d(DI)", k.acc(i, j), j*k.v.width*4)
		}
		p("\tADDQ AX, DI")
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("%s_over:", name)
	for i := 0; i < k.mr; i++ {
		for j := 0; j < nv; j++ {
			p("\tVMULPS %s, %s, %s", al, k.acc(i, j), k.acc(i, j))
			p("\tVMOVUPS %s, %d(DI)", k.acc(i, j), j*k.v.width*4)
		}
		p("\tADDQ AX, DI")
	}
	p("\tVZEROUPPER")
	p("\tRET")
}

// transpose8 emits func transpose8(n8 int, src *float32, lds int, dst *float32, ldd int):
// for each of n8 blocks q, dst[(8q+r)*ldd + s] = src[s*lds + 8q + r], r, s < 8.
// That is: 8 rows of src (8·n8 floats each) become 8-float columns of dst.
func transpose8() {
	p("")
	p("// func transpose8(n8 int, src *float32, lds int, dst *float32, ldd int)")
	p("TEXT ·transpose8(SB), NOSPLIT, $0-40")
	p("\tMOVQ n8+0(FP), CX")
	p("\tMOVQ src+8(FP), SI")
	p("\tMOVQ lds+16(FP), AX")
	p("\tSHLQ $2, AX")
	p("\tMOVQ dst+24(FP), DI")
	p("\tMOVQ ldd+32(FP), DX")
	p("\tSHLQ $2, DX")
	p("\tLEAQ (AX)(AX*2), BX") // 3*lds
	p("\tLEAQ (DX)(DX*2), R9") // 3*ldd
	p("\tTESTQ CX, CX")
	p("\tJZ tr8_done")
	p("tr8_loop:")
	p("\tMOVQ SI, R8")
	p("\tVMOVUPS (R8), Y0")
	p("\tVMOVUPS (R8)(AX*1), Y1")
	p("\tVMOVUPS (R8)(AX*2), Y2")
	p("\tVMOVUPS (R8)(BX*1), Y3")
	p("\tLEAQ (R8)(AX*4), R8")
	p("\tVMOVUPS (R8), Y4")
	p("\tVMOVUPS (R8)(AX*1), Y5")
	p("\tVMOVUPS (R8)(AX*2), Y6")
	p("\tVMOVUPS (R8)(BX*1), Y7")
	p("\tVUNPCKLPS Y1, Y0, Y8")
	p("\tVUNPCKHPS Y1, Y0, Y9")
	p("\tVUNPCKLPS Y3, Y2, Y10")
	p("\tVUNPCKHPS Y3, Y2, Y11")
	p("\tVUNPCKLPS Y5, Y4, Y12")
	p("\tVUNPCKHPS Y5, Y4, Y13")
	p("\tVUNPCKLPS Y7, Y6, Y14")
	p("\tVUNPCKHPS Y7, Y6, Y15")
	p("\tVSHUFPS $0x44, Y10, Y8, Y0")
	p("\tVSHUFPS $0xEE, Y10, Y8, Y1")
	p("\tVSHUFPS $0x44, Y11, Y9, Y2")
	p("\tVSHUFPS $0xEE, Y11, Y9, Y3")
	p("\tVSHUFPS $0x44, Y14, Y12, Y4")
	p("\tVSHUFPS $0xEE, Y14, Y12, Y5")
	p("\tVSHUFPS $0x44, Y15, Y13, Y6")
	p("\tVSHUFPS $0xEE, Y15, Y13, Y7")
	p("\tVPERM2F128 $0x20, Y4, Y0, Y8")
	p("\tVPERM2F128 $0x20, Y5, Y1, Y9")
	p("\tVPERM2F128 $0x20, Y6, Y2, Y10")
	p("\tVPERM2F128 $0x20, Y7, Y3, Y11")
	p("\tVPERM2F128 $0x31, Y4, Y0, Y12")
	p("\tVPERM2F128 $0x31, Y5, Y1, Y13")
	p("\tVPERM2F128 $0x31, Y6, Y2, Y14")
	p("\tVPERM2F128 $0x31, Y7, Y3, Y15")
	p("\tMOVQ DI, R8")
	p("\tVMOVUPS Y8, (R8)")
	p("\tVMOVUPS Y9, (R8)(DX*1)")
	p("\tVMOVUPS Y10, (R8)(DX*2)")
	p("\tVMOVUPS Y11, (R8)(R9*1)")
	p("\tLEAQ (R8)(DX*4), R8")
	p("\tVMOVUPS Y12, (R8)")
	p("\tVMOVUPS Y13, (R8)(DX*1)")
	p("\tVMOVUPS Y14, (R8)(DX*2)")
	p("\tVMOVUPS Y15, (R8)(R9*1)")
	p("\tADDQ $32, SI")
	p("\tLEAQ (R8)(DX*4), DI")
	p("\tDECQ CX")
	p("\tJNZ tr8_loop")
	p("tr8_done:")
	p("\tVZEROUPPER")
	p("\tRET")
}

// Cephes expf constants, each stored 16 times (64 bytes) so that both
// AVX2 and AVX-512 instructions can take them as memory operands.
var expConsts = []struct {
	name string
	val  string
}{
	{"log2e", "0x3fb8aa3b"}, // 1.44269504
	{"c1", "0x3f318000"},    // 0.693359375
	{"c2", "0xb95e8083"},    // -2.12194440e-4
	{"p0", "0x39506967"},    // 1.9875691500e-4
	{"p1", "0x3ab743ce"},    // 1.3981999507e-3
	{"p2", "0x3c088908"},    // 8.3334519073e-3
	{"p3", "0x3d2aa9c1"},    // 4.1665795894e-2
	{"p4", "0x3e2aaaaa"},    // 1.6666665459e-1
	{"p5", "0x3f000000"},    // 5.0000001201e-1
	{"one", "0x3f800000"},   // 1
	{"lo", "0xc2aeac50"},    // -87.336544
	{"hi", "0x42b17218"},    // 88.72284
	{"bias", "0x0000007f"},  // 127 (int32)
	{"gk", "0xbfd9db23"},    // -1.702
	{"gk2", "0x3fd9db23"},   // 1.702
}

func cst(name string) string {
	for i, c := range expConsts {
		if c.name == name {
			return fmt.Sprintf("expc<>+%d(SB)", 64*i)
		}
	}
	panic(name)
}

func consts() {
	p("")
	for i, c := range expConsts {
		for r := 0; r < 16; r++ {
			p("DATA expc<>+%d(SB)/4, $%s", 64*i+4*r, c.val)
		}
	}
	p("GLOBL expc<>(SB), RODATA|NOPTR, $%d", 64*len(expConsts))
}

// emitExp computes x = exp(x) lane-wise using temporaries n and y (all three
// vector registers of v); the result is left in y.
func emitExp(v isa, x, n, y string) {
	p("\tVMAXPS %s, %s, %s", cst("lo"), x, x)
	p("\tVMINPS %s, %s, %s", cst("hi"), x, x)
	p("\tVMULPS %s, %s, %s", cst("log2e"), x, n)
	if v.name == "512" {
		p("\tVRNDSCALEPS $0, %s, %s", n, n)
	} else {
		p("\tVROUNDPS $0, %s, %s", n, n)
	}
	p("\tVFNMADD231PS %s, %s, %s", cst("c1"), n, x)
	p("\tVFNMADD231PS %s, %s, %s", cst("c2"), n, x)
	p("\tVMOVUPS %s, %s", cst("p0"), y)
	for _, c := range []string{"p1", "p2", "p3", "p4", "p5", "one", "one"} {
		p("\tVFMADD213PS %s, %s, %s", cst(c), x, y)
	}
	if v.name == "512" {
		p("\tVSCALEFPS %s, %s, %s", n, y, y)
	} else {
		p("\tVCVTPS2DQ %s, %s", n, n)
		p("\tVPADDD %s, %s, %s", cst("bias"), n, n)
		p("\tVPSLLD $23, %s, %s", n, n)
		p("\tVMULPS %s, %s, %s", n, y, y)
	}
}

// hsum reduces vector register 0 (Y0/Z0) to a scalar in X0 with op ("ADD" or "MAX").
func hsum(v isa, op string) {
	if v.name == "512" {
		p("\tVEXTRACTF32X8 $1, Z0, Y1")
		p("\tV%sPS Y1, Y0, Y0", op)
	}
	p("\tVEXTRACTF128 $1, Y0, X1")
	p("\tV%sPS X1, X0, X0", op)
	p("\tVPERMILPS $0x4e, X0, X1")
	p("\tV%sPS X1, X0, X0", op)
	p("\tVPERMILPS $0xb1, X0, X1")
	p("\tV%sPS X1, X0, X0", op)
}

func shift(v isa) int { return map[int]int{8: 3, 16: 4}[v.width] }

func vecFuncs(v isa) {
	expSubSumFunc(v)
	maxFunc(v)
	if v.name == "512" {
		rmsFuncs()
		adamFunc()
		subMulFunc()
		packRowsFunc()
	}
	geluFwdFunc(v)
	geluBwdFunc(v)
}

// zeroReg emits a zeroing of vector register i.
func zeroReg(v isa, i int) {
	if v.name == "512" {
		p("\tVPXORD Z%d, Z%d, Z%d", i, i, i)
	} else {
		p("\tVXORPS Y%d, Y%d, Y%d", i, i, i)
	}
}

// expSubSumFunc emits expSubSum: x[i] = exp(x[i]-sub), returns the sum; n a
// multiple of the width for avx2, any n >= 0 for 512 (the tail under a lane mask).
func expSubSumFunc(v isa) {
	r := v.reg
	name := "expSubSum" + v.name
	p("")
	p("// func %s(x *float32, n int, sub float32) float32", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-28", name)
	p("\tMOVQ x+0(FP), SI")
	p("\tMOVQ n+8(FP), CX")
	p("\tSHRQ $%d, CX", shift(v))
	zeroReg(v, 0)
	p("\tVBROADCASTSS sub+16(FP), %s1", r)
	p("\tTESTQ CX, CX")
	p("\tJZ %s_done", name)
	// one vector of x: the whole ones, or (masked, 512) the last n mod 16
	body := func(masked bool) {
		ld(masked, "(SI)", r+"2")
		p("\tVSUBPS %s1, %s2, %s2", r, r, r)
		emitExp(v, r+"2", r+"3", r+"4")
		st(masked, r+"4", "(SI)")
		if masked { // the lanes outside K1 hold exp(−sub), not 0
			p("\tVADDPS Z4, Z0, K1, Z0")
		} else {
			p("\tVADDPS %s4, %s0, %s0", r, r, r)
		}
	}
	p("%s_loop:", name)
	body(false)
	p("\tADDQ $%d, SI", v.width*4)
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("%s_done:", name)
	if v.name == "512" {
		tailMask(name)
		body(true)
		p("%s_sum:", name)
	}
	hsum(v, "ADD")
	p("\tMOVSS X0, ret+24(FP)")
	p("\tVZEROUPPER")
	p("\tRET")
}

// tailMask emits, for a loop that left n in the frame and SI past its
// whole vectors, K1 = the low n mod 16 lanes, and a jump to NAME_sum
// when there are none. It clobbers AX and CX.
func tailMask(name string) { tailMaskAt(name, "n+8(FP)") }

// tailMaskAt is tailMask with n read from the frame slot nArg.
func tailMaskAt(name, nArg string) {
	p("\tMOVQ %s, CX", nArg)
	p("\tANDQ $15, CX")
	p("\tJZ %s_sum", name)
	p("\tMOVL $1, AX")
	p("\tSHLL CX, AX")
	p("\tDECL AX")
	p("\tKMOVW AX, K1")
}

// maxFunc emits maxV: max of x[0:n]; n a positive multiple of the width
// for avx2, any positive n for 512 (the tail under a lane mask).
func maxFunc(v isa) {
	r := v.reg
	name := "max" + v.name
	p("")
	p("// func %s(x *float32, n int) float32", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-20", name)
	p("\tMOVQ x+0(FP), SI")
	p("\tMOVQ n+8(FP), CX")
	p("\tSHRQ $%d, CX", shift(v))
	if v.name == "512" {
		// Z0 starts as x[0] in every lane: the identity of max over x.
		p("\tVBROADCASTSS (SI), Z0")
		p("\tTESTQ CX, CX")
		p("\tJZ %s_done", name)
	} else {
		p("\tVMOVUPS (SI), %s0", r)
	}
	p("%s_loop:", name)
	p("\tVMAXPS (SI), %s0, %s0", r, r)
	p("\tADDQ $%d, SI", v.width*4)
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	if v.name == "512" {
		p("%s_done:", name)
		tailMask(name)
		p("\tVMOVAPS Z0, Z2")
		p("\tVMOVUPS (SI), K1, Z2") // masked-off lanes keep Z0's values
		p("\tVMAXPS Z2, Z0, Z0")
		p("%s_sum:", name)
	}
	hsum(v, "MAX")
	p("\tMOVSS X0, ret+16(FP)")
	p("\tVZEROUPPER")
	p("\tRET")
}

// geluFwdFunc emits geluFwd: y[i] = x·σ(1.702x), n a multiple of the width.
func geluFwdFunc(v isa) {
	r := v.reg
	name := "geluFwd" + v.name
	p("")
	p("// func %s(y, x *float32, n int)", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-24", name)
	p("\tMOVQ y+0(FP), DI")
	p("\tMOVQ x+8(FP), SI")
	p("\tMOVQ n+16(FP), CX")
	p("\tSHRQ $%d, CX", shift(v))
	p("\tTESTQ CX, CX")
	p("\tJZ %s_done", name)
	p("%s_loop:", name)
	p("\tVMOVUPS (SI), %s5", r)
	p("\tVMULPS %s, %s5, %s2", cst("gk"), r, r) // -1.702x
	emitExp(v, r+"2", r+"3", r+"4")             // e = exp(-1.702x)
	p("\tVADDPS %s, %s4, %s4", cst("one"), r, r)
	p("\tVDIVPS %s4, %s5, %s5", r, r, r) // x / (1+e)
	p("\tVMOVUPS %s5, (DI)", r)
	p("\tADDQ $%d, SI", v.width*4)
	p("\tADDQ $%d, DI", v.width*4)
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("%s_done:", name)
	p("\tVZEROUPPER")
	p("\tRET")
}

// geluBwdFunc emits geluBwd: dx[i] = dy[i]·(s + 1.702·x·s·(1-s)), s = σ(1.702x).
func geluBwdFunc(v isa) {
	r := v.reg
	name := "geluBwd" + v.name
	p("")
	p("// func %s(dx, x, dy *float32, n int)", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-32", name)
	p("\tMOVQ dx+0(FP), DI")
	p("\tMOVQ x+8(FP), SI")
	p("\tMOVQ dy+16(FP), DX")
	p("\tMOVQ n+24(FP), CX")
	p("\tSHRQ $%d, CX", shift(v))
	p("\tTESTQ CX, CX")
	p("\tJZ %s_done", name)
	p("%s_loop:", name)
	p("\tVMOVUPS (SI), %s5", r)
	p("\tVMULPS %s, %s5, %s2", cst("gk"), r, r)
	emitExp(v, r+"2", r+"3", r+"4")
	p("\tVADDPS %s, %s4, %s4", cst("one"), r, r)
	p("\tVMOVUPS %s, %s6", cst("one"), r)
	p("\tVDIVPS %s4, %s6, %s6", r, r, r) // s = 1/(1+e)
	p("\tVMOVUPS %s, %s7", cst("one"), r)
	p("\tVSUBPS %s6, %s7, %s7", r, r, r)         // 1-s
	p("\tVMULPS %s, %s5, %s5", cst("gk2"), r, r) // 1.702x
	p("\tVMULPS %s6, %s5, %s5", r, r, r)         // 1.702 x s
	p("\tVFMADD213PS %s6, %s7, %s5", r, r, r)    // 1.702 x s (1-s) + s
	p("\tVMULPS (DX), %s5, %s5", r, r)
	p("\tVMOVUPS %s5, (DI)", r)
	p("\tADDQ $%d, SI", v.width*4)
	p("\tADDQ $%d, DI", v.width*4)
	p("\tADDQ $%d, DX", v.width*4)
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("%s_done:", name)
	p("\tVZEROUPPER")
	p("\tRET")
}

// bf16Funcs emits the bf16 conversion and packing helpers:
//
//	cvtBF16(dst *uint16, src *float32, n32 int): dst[i] = RNE bf16 of src[i], i < 32·n32
//	    (AVX512_BF16: VCVTNE2PS2BF16, denormals flushed to zero, NaNs quieted)
//	pairRows(dst *uint32, r0, r1 *uint16, n16 int): dst[j] = r0[j] | r1[j]<<16, j < 16·n16
//	    (AVX-512F: two bf16 rows interleaved into k-pairs)
func bf16Funcs() {
	p("")
	p("// func cvtBF16(dst *uint16, src *float32, n32 int)")
	p("TEXT ·cvtBF16(SB), NOSPLIT, $0-24")
	p("\tMOVQ dst+0(FP), DI")
	p("\tMOVQ src+8(FP), SI")
	p("\tMOVQ n32+16(FP), CX")
	p("\tTESTQ CX, CX")
	p("\tJZ cvtbf16_done")
	p("cvtbf16_loop:")
	p("\tVMOVUPS (SI), Z0")
	p("\tVMOVUPS 64(SI), Z1")
	vcvtne2ps2bf16("Z0", "Z1", "Z2") // Z2 = bf16(Z0) | bf16(Z1) in the upper half
	p("\tVMOVDQU32 Z2, (DI)")
	p("\tADDQ $128, SI")
	p("\tADDQ $64, DI")
	p("\tDECQ CX")
	p("\tJNZ cvtbf16_loop")
	p("cvtbf16_done:")
	p("\tVZEROUPPER")
	p("\tRET")

	p("")
	p("// func pairRows(dst *uint32, r0, r1 *uint16, n16 int)")
	p("TEXT ·pairRows(SB), NOSPLIT, $0-32")
	p("\tMOVQ dst+0(FP), DI")
	p("\tMOVQ r0+8(FP), SI")
	p("\tMOVQ r1+16(FP), DX")
	p("\tMOVQ n16+24(FP), CX")
	p("\tTESTQ CX, CX")
	p("\tJZ pairrows_done")
	p("pairrows_loop:")
	p("\tVPMOVZXWD (SI), Z0")
	p("\tVPMOVZXWD (DX), Z1")
	p("\tVPSLLD $16, Z1, Z1")
	p("\tVPORD Z1, Z0, Z0")
	p("\tVMOVDQU32 Z0, (DI)")
	p("\tADDQ $32, SI")
	p("\tADDQ $32, DX")
	p("\tADDQ $64, DI")
	p("\tDECQ CX")
	p("\tJNZ pairrows_loop")
	p("pairrows_done:")
	p("\tVZEROUPPER")
	p("\tRET")
}

func main() {
	p("// Code generated by asm/gen.go; DO NOT EDIT.")
	p("")
	p("//go:build amd64 && !purego")
	p("")
	p("#include \"textflag.h\"")
	for _, s := range [][2]int{{14, 32}, {12, 32}, {8, 32}, {6, 64}} {
		kernel(avx512, s[0], s[1], false)
		kernel(avx512, s[0], s[1], true)
	}
	kernel(avx2, 6, 16, false)
	kernel(avx2, 6, 16, true)
	kernelBF16(14, 32, false)
	kernelBF16(14, 32, true)
	bf16Funcs()
	transpose8()
	consts()
	vecFuncs(avx512)
	vecFuncs(avx2)
	os.Stdout.WriteString(out.String())
}

// rowLoop emits a loop over n floats, 16 at a time, then the last n mod 16
// under the lane mask K1: body(masked) emits one step (loads with .Z and
// K1 and stores with K1 when masked); ptrs are the registers advanced by
// 64 bytes per step; the count is read from the frame slot nArg. The
// code after it starts at label NAME_sum.
func rowLoop(name, nArg string, ptrs []string, body func(masked bool)) {
	p("\tMOVQ %s, BX", nArg)
	p("\tSHRQ $4, BX")
	p("\tTESTQ BX, BX")
	p("\tJZ %s_tail", name)
	p("%s_loop:", name)
	body(false)
	for _, r := range ptrs {
		p("\tADDQ $64, %s", r)
	}
	p("\tDECQ BX")
	p("\tJNZ %s_loop", name)
	p("%s_tail:", name)
	tailMaskAt(name, nArg)
	body(true)
	p("%s_sum:", name)
}

// ld emits a load of 16 floats at mem into reg, zeroing the lanes outside
// K1 when masked.
func ld(masked bool, mem, reg string) {
	if masked {
		p("\tVMOVUPS.Z %s, K1, %s", mem, reg)
	} else {
		p("\tVMOVUPS %s, %s", mem, reg)
	}
}

// st emits a store of reg to mem, of the lanes in K1 only when masked.
func st(masked bool, reg, mem string) {
	if masked {
		p("\tVMOVUPS %s, K1, %s", reg, mem)
	} else {
		p("\tVMOVUPS %s, %s", reg, mem)
	}
}

// rmsFuncs emits the avx512 rows of RMS norm, any n (tails masked):
//
//	sumSq512:     Σ x²
//	scaleMul512:  o = x·r·g
//	rmsBwdDot512: part += dy·x·r; returns Σ g·dy·x
//	rmsBwdDx512:  dx += r·g·dy − k·x
func rmsFuncs() {
	p("")
	p("// func sumSq512(x *float32, n int) float32")
	p("TEXT ·sumSq512(SB), NOSPLIT, $0-20")
	p("\tMOVQ x+0(FP), SI")
	zeroReg(avx512, 0)
	rowLoop("sumsq512", "n+8(FP)", []string{"SI"}, func(m bool) {
		ld(m, "(SI)", "Z2")
		p("\tVFMADD231PS Z2, Z2, Z0")
	})
	hsum(avx512, "ADD")
	p("\tMOVSS X0, ret+16(FP)")
	p("\tVZEROUPPER")
	p("\tRET")

	p("")
	p("// func scaleMul512(o, x, gain *float32, n int, r float32)")
	p("TEXT ·scaleMul512(SB), NOSPLIT, $0-36")
	p("\tMOVQ o+0(FP), DI")
	p("\tMOVQ x+8(FP), SI")
	p("\tMOVQ gain+16(FP), DX")
	p("\tVBROADCASTSS r+32(FP), Z1")
	rowLoop("scalemul512", "n+24(FP)", []string{"DI", "SI", "DX"}, func(m bool) {
		ld(m, "(SI)", "Z2")
		ld(m, "(DX)", "Z3")
		p("\tVMULPS Z1, Z2, Z2")
		p("\tVMULPS Z3, Z2, Z2")
		st(m, "Z2", "(DI)")
	})
	p("\tVZEROUPPER")
	p("\tRET")

	p("")
	p("// func rmsBwdDot512(part, x, dy, gain *float32, n int, r float32) float32")
	p("TEXT ·rmsBwdDot512(SB), NOSPLIT, $0-52")
	p("\tMOVQ part+0(FP), DI")
	p("\tMOVQ x+8(FP), SI")
	p("\tMOVQ dy+16(FP), DX")
	p("\tMOVQ gain+24(FP), R8")
	p("\tVBROADCASTSS r+40(FP), Z1")
	zeroReg(avx512, 0)
	rowLoop("rmsbwddot512", "n+32(FP)", []string{"DI", "SI", "DX", "R8"}, func(m bool) {
		ld(m, "(SI)", "Z2")           // x
		ld(m, "(DX)", "Z3")           // dy
		ld(m, "(R8)", "Z4")           // g
		ld(m, "(DI)", "Z5")           // part
		p("\tVMULPS Z3, Z4, Z4")      // g·dy
		p("\tVFMADD231PS Z2, Z4, Z0") // dot += g·dy·x
		p("\tVMULPS Z2, Z3, Z3")      // dy·x
		p("\tVFMADD231PS Z1, Z3, Z5") // part += dy·x·r
		st(m, "Z5", "(DI)")
	})
	hsum(avx512, "ADD")
	p("\tMOVSS X0, ret+48(FP)")
	p("\tVZEROUPPER")
	p("\tRET")

	p("")
	p("// func rmsBwdDx512(dx, x, dy, gain *float32, n int, r, k float32)")
	p("TEXT ·rmsBwdDx512(SB), NOSPLIT, $0-48")
	p("\tMOVQ dx+0(FP), DI")
	p("\tMOVQ x+8(FP), SI")
	p("\tMOVQ dy+16(FP), DX")
	p("\tMOVQ gain+24(FP), R8")
	p("\tVBROADCASTSS r+40(FP), Z1")
	p("\tVBROADCASTSS k+44(FP), Z6")
	rowLoop("rmsbwddx512", "n+32(FP)", []string{"DI", "SI", "DX", "R8"}, func(m bool) {
		ld(m, "(SI)", "Z2")            // x
		ld(m, "(DX)", "Z3")            // dy
		ld(m, "(R8)", "Z4")            // g
		ld(m, "(DI)", "Z5")            // dx
		p("\tVMULPS Z1, Z4, Z4")       // r·g
		p("\tVMULPS Z3, Z4, Z4")       // r·g·dy
		p("\tVFNMADD231PS Z6, Z2, Z4") // − k·x
		p("\tVADDPS Z4, Z5, Z5")
		st(m, "Z5", "(DI)")
	})
	p("\tVZEROUPPER")
	p("\tRET")
}

// adamFunc emits adam512(p, g, m, v *float32, n int, c *[9]float32), one
// AdamW step over n values (any n; the tail under a lane mask), with
// c = β1, 1−β1, β2, 1−β2, 1/(1−β1^t), 1/(1−β2^t), ε, wd, lr. It rounds
// every operation as adamJob's Go loop does (no fused multiply-adds), so
// both give the same bits:
//
//	m = β1·m + (1−β1)·g;  v = β2·v + ((1−β2)·g)·g
//	p -= lr·((m·c1) / (sqrt(v·c2) + ε) + wd·p)
func adamFunc() {
	p("")
	p("// func adam512(p, grad, m, v *float32, n int, c *[9]float32)")
	p("TEXT ·adam512(SB), NOSPLIT, $0-48")
	p("\tMOVQ p+0(FP), DI")
	p("\tMOVQ grad+8(FP), SI")
	p("\tMOVQ m+16(FP), DX")
	p("\tMOVQ v+24(FP), R8")
	p("\tMOVQ c+40(FP), AX")
	for i := 0; i < 9; i++ {
		p("\tVBROADCASTSS %d(AX), Z%d", 4*i, 16+i)
	}
	rowLoop("adam512", "n+32(FP)", []string{"DI", "SI", "DX", "R8"}, func(m bool) {
		ld(m, "(SI)", "Z1")       // g
		ld(m, "(DX)", "Z2")       // m
		ld(m, "(R8)", "Z3")       // v
		ld(m, "(DI)", "Z4")       // p
		p("\tVMULPS Z16, Z2, Z2") // β1·m
		p("\tVMULPS Z17, Z1, Z5") // (1−β1)·g
		p("\tVADDPS Z5, Z2, Z2")  // m
		p("\tVMULPS Z18, Z3, Z3") // β2·v
		p("\tVMULPS Z19, Z1, Z6") // (1−β2)·g
		p("\tVMULPS Z1, Z6, Z6")  // ·g
		p("\tVADDPS Z6, Z3, Z3")  // v
		st(m, "Z2", "(DX)")
		st(m, "Z3", "(R8)")
		p("\tVMULPS Z21, Z3, Z6") // v·c2
		p("\tVSQRTPS Z6, Z6")
		p("\tVADDPS Z22, Z6, Z6") // + ε
		p("\tVMULPS Z20, Z2, Z5") // m·c1
		p("\tVDIVPS Z6, Z5, Z5")  // / den
		p("\tVMULPS Z23, Z4, Z7") // wd·p
		p("\tVADDPS Z7, Z5, Z5")
		p("\tVMULPS Z24, Z5, Z5") // ·lr
		p("\tVSUBPS Z5, Z4, Z4")  // p − …
		st(m, "Z4", "(DI)")
	})
	p("\tVZEROUPPER")
	p("\tRET")
}

// subMulFunc emits subMul512(s, p *float32, n int, d float32): s = s·(p − d)
// over n values (any n; the tail under a lane mask), rounded as the Go
// loop rounds it: attention's dS = P ∘ (dP − D) row by row.
func subMulFunc() {
	p("")
	p("// func subMul512(s, p *float32, n int, d float32)")
	p("TEXT ·subMul512(SB), NOSPLIT, $0-28")
	p("\tMOVQ s+0(FP), DI")
	p("\tMOVQ p+8(FP), SI")
	p("\tVBROADCASTSS d+24(FP), Z1")
	rowLoop("submul512", "n+16(FP)", []string{"DI", "SI"}, func(m bool) {
		ld(m, "(SI)", "Z2")
		ld(m, "(DI)", "Z3")
		p("\tVSUBPS Z1, Z2, Z2")
		p("\tVMULPS Z2, Z3, Z3")
		st(m, "Z3", "(DI)")
	})
	p("\tVZEROUPPER")
	p("\tRET")
}

// packRowsFunc emits packRows32(dst, src *float32, lds, rows int): dst[p*32+j]
// = src[p*lds+j] for j < 32, p < rows (a full B panel of packB: one call
// instead of a 128-byte memmove per row).
func packRowsFunc() {
	p("")
	p("// func packRows32(dst, src *float32, lds, rows int)")
	p("TEXT ·packRows32(SB), NOSPLIT, $0-32")
	p("\tMOVQ dst+0(FP), DI")
	p("\tMOVQ src+8(FP), SI")
	p("\tMOVQ lds+16(FP), DX")
	p("\tSHLQ $2, DX")
	p("\tMOVQ rows+24(FP), CX")
	p("\tTESTQ CX, CX")
	p("\tJZ packrows32_done")
	p("packrows32_loop:")
	p("\tVMOVUPS (SI), Z0")
	p("\tVMOVUPS 64(SI), Z1")
	p("\tVMOVUPS Z0, (DI)")
	p("\tVMOVUPS Z1, 64(DI)")
	p("\tADDQ DX, SI")
	p("\tADDQ $128, DI")
	p("\tDECQ CX")
	p("\tJNZ packrows32_loop")
	p("packrows32_done:")
	p("\tVZEROUPPER")
	p("\tRET")
}
