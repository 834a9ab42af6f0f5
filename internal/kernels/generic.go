package kernels

import "unsafe"

// The portable path: a 4x4 register-blocked micro-kernel in plain Go,
// used off amd64, on CPUs without AVX2+FMA, and when IGPT_KERNELS=generic.

var genericImpl = &impl{name: "generic", mr: 4, nr: 4, row: gen4x4r, col: gen4x4c}

func gen4x4r(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32) {
	if kc <= 0 {
		gen4x4store(c, ldc, alpha, beta, &[16]float32{})
		return
	}
	a0 := unsafe.Slice(a, kc)
	a1 := unsafe.Slice((*float32)(unsafe.Add(unsafe.Pointer(a), 4*sa)), kc)
	a2 := unsafe.Slice((*float32)(unsafe.Add(unsafe.Pointer(a), 8*sa)), kc)
	a3 := unsafe.Slice((*float32)(unsafe.Add(unsafe.Pointer(a), 12*sa)), kc)
	bb := unsafe.Slice(b, 4*kc)
	var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33 float32
	for p := 0; p < kc; p++ {
		bp := bb[4*p : 4*p+4 : 4*p+4]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		x := a0[p]
		c00 += x * b0
		c01 += x * b1
		c02 += x * b2
		c03 += x * b3
		x = a1[p]
		c10 += x * b0
		c11 += x * b1
		c12 += x * b2
		c13 += x * b3
		x = a2[p]
		c20 += x * b0
		c21 += x * b1
		c22 += x * b2
		c23 += x * b3
		x = a3[p]
		c30 += x * b0
		c31 += x * b1
		c32 += x * b2
		c33 += x * b3
	}
	gen4x4store(c, ldc, alpha, beta, &[16]float32{c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33})
}

func gen4x4c(kc int, a *float32, sa int, b *float32, c *float32, ldc int, alpha, beta float32) {
	if kc <= 0 {
		gen4x4store(c, ldc, alpha, beta, &[16]float32{})
		return
	}
	aa := unsafe.Slice(a, (kc-1)*sa+4)
	bb := unsafe.Slice(b, 4*kc)
	var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33 float32
	for p := 0; p < kc; p++ {
		ap := aa[p*sa : p*sa+4 : p*sa+4]
		bp := bb[4*p : 4*p+4 : 4*p+4]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		x := ap[0]
		c00 += x * b0
		c01 += x * b1
		c02 += x * b2
		c03 += x * b3
		x = ap[1]
		c10 += x * b0
		c11 += x * b1
		c12 += x * b2
		c13 += x * b3
		x = ap[2]
		c20 += x * b0
		c21 += x * b1
		c22 += x * b2
		c23 += x * b3
		x = ap[3]
		c30 += x * b0
		c31 += x * b1
		c32 += x * b2
		c33 += x * b3
	}
	gen4x4store(c, ldc, alpha, beta, &[16]float32{c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33})
}

func gen4x4store(c *float32, ldc int, alpha, beta float32, acc *[16]float32) {
	cc := unsafe.Slice(c, 3*ldc+4)
	for i := 0; i < 4; i++ {
		row := cc[i*ldc : i*ldc+4 : i*ldc+4]
		for j := 0; j < 4; j++ {
			if beta == 0 {
				row[j] = alpha * acc[4*i+j]
			} else {
				row[j] = alpha*acc[4*i+j] + beta*row[j]
			}
		}
	}
}
