package kernels

import "unsafe"

// SgemmBF16's blocked loop, packing and micro-kernel calls. The layout
// VDPBF16PS wants is k-pairs: one 32-bit lane holds op(X)[·, 2q] in its low
// half and op(X)[·, 2q+1] in its high half, so one instruction does two
// k-steps. A depth kc that is odd gets a zero high half in its last pair
// (on both operands), which adds exactly 0.
//
//	B block: bp16[panel·kc2·nr + q·nr + j] = pair(op(B)[pc+2q, jc+panel·nr+j], op(B)[pc+2q+1, …])
//	A, in place (A not transposed, kc even): pair (i, q) is the 32 bits at
//	    &A[i, pc+2q], read directly by the row-addressed kernel
//	A, packed (Aᵀ, odd kc, or the M edge): ap16[q·mp + i] = pair(op(A)[r0+i, pc+2q], …),
//	    mp rows wide (a multiple of mr, zero-padded), read by the col-addressed kernel

// blockKBF16 is SgemmBF16's kc (even): its kc/2 pairs × nr panel takes the
// bytes of an fp32 blockK × nr one.
var blockKBF16 = 2 * blockK

func grow32(s []uint32, n int) []uint32 {
	if cap(s) < n {
		return make([]uint32, n, n+n/8)
	}
	return s[:n]
}

// gemmSeqBF16 is gemmSeq for bf16 A and B (m, n, k > 0; im.bf16 != nil).
// a and b point at bf16 values; lda, ldb count values.
func gemmSeqBF16(ws *workspace, im *impl, ta, tb bool, m, n, k int, alpha float32, a unsafe.Pointer, lda int, b unsafe.Pointer, ldb int, beta float32, c unsafe.Pointer, ldc int) {
	mr, nr, bo := im.mr, im.nr, im.bf16
	kc2Max := (min(blockKBF16, k) + 1) / 2
	ncMax := min(blockN, (n+nr-1)/nr*nr)
	mcMax := blockMR * mr
	ws.bp16 = grow32(ws.bp16, kc2Max*ncMax)
	ws.ap16 = grow32(ws.ap16, kc2Max*min(mcMax, (m+mr-1)/mr*mr))
	for jc := 0; jc < n; jc += blockN {
		nc := min(blockN, n-jc)
		for pc := 0; pc < k; pc += blockKBF16 {
			kc := min(blockKBF16, k-pc)
			kc2 := (kc + 1) / 2
			bt := beta
			if pc > 0 {
				bt = 1
			}
			packB16(im, ws.bp16, nr, tb, b, ldb, pc, jc, kc, nc)
			// A is read in place when its rows hold whole pairs and are not
			// a multiple of 4 KiB apart (aliasedStride); else it is packed.
			inPlace := !ta && kc%2 == 0 && !aliasedStride(lda, 2)
			for ic := 0; ic < m; ic += mcMax {
				mc := min(mcMax, m-ic)
				mIn := 0 // rows read in place
				if inPlace {
					mIn = mc / mr * mr
				}
				mp := (mc - mIn + mr - 1) / mr * mr // packed rows, padded
				if mp > 0 {
					packA16(im, ws.ap16[:kc2*mp], mp, ta, a, lda, ic+mIn, mc-mIn, pc, kc)
				}
				for jr := 0; jr < nc; jr += nr {
					nrr := min(nr, nc-jr)
					bpan := unsafe.Pointer(&ws.bp16[jr*kc2])
					cc := unsafe.Add(c, 4*(ic*ldc+jc+jr))
					for ir := 0; ir < mIn; ir += mr {
						ap := unsafe.Add(a, 2*((ic+ir)*lda+pc))
						tileBF16(ws, bo.row, kc2, ap, lda, bpan, unsafe.Add(cc, 4*ir*ldc), ldc, mr, nr, mr, nrr, alpha, bt)
					}
					for ir := 0; ir < mp; ir += mr {
						rows := min(mr, mc-mIn-ir)
						tileBF16(ws, bo.col, kc2, unsafe.Pointer(&ws.ap16[ir]), mp, bpan, unsafe.Add(cc, 4*(mIn+ir)*ldc), ldc, mr, nr, rows, nrr, alpha, bt)
					}
				}
			}
		}
	}
}

// tileBF16 runs a micro-kernel on C[0:rows, 0:cols] (rows <= mr, cols <=
// nr): in place when the tile is whole, else through ws.tile.
func tileBF16(ws *workspace, kern bf16Kernel, kc2 int, a unsafe.Pointer, sa int, b unsafe.Pointer, c unsafe.Pointer, ldc, mr, nr, rows, cols int, alpha, beta float32) {
	if rows == mr && cols == nr {
		kern(kc2, a, sa, b, (*float32)(c), ldc, alpha, beta)
		return
	}
	kern(kc2, a, sa, b, &ws.tile[0], nr, alpha, 0)
	mergeTile(c, ldc, ws.tile[:], nr, rows, cols, beta)
}

// pair is the 32-bit lane of a k-pair: lo at the even k, hi at the odd one.
func pair(lo, hi uint16) uint32 { return uint32(lo) | uint32(hi)<<16 }

// at16 is the bf16 value at index i of the matrix at base.
func at16(base unsafe.Pointer, i int) uint16 { return *(*uint16)(unsafe.Add(base, 2*i)) }

// packB16 packs op(B)[pc:pc+kc, jc:jc+nc] into nr-wide panels of k-pairs
// (see the layout above), zero-padded to nr columns and to even depth.
func packB16(im *impl, bp []uint32, nr int, tb bool, b unsafe.Pointer, ldb, pc, jc, kc, nc int) {
	kc2 := (kc + 1) / 2
	for q := 0; q*nr < nc; q++ {
		j0 := jc + q*nr
		w := min(nr, nc-q*nr)
		pan := bp[q*kc2*nr : (q+1)*kc2*nr]
		if tb {
			// B[p, j] at b[j*ldb + p]: pairs are contiguous in B's rows.
			transposePairs(im, pan, nr, b, ldb, j0, w, pc, kc)
		} else {
			// B[p, j] at b[p*ldb + j]: interleave rows p and p+1.
			interleaveRows(im, pan, nr, b, ldb, pc, kc, j0, w)
		}
		if w < nr {
			for p := 0; p < kc2; p++ {
				clear(pan[p*nr+w : p*nr+nr])
			}
		}
	}
}

// packA16 packs rows r0..r0+rows of op(A)[:, pc:pc+kc] into ap[q*mp + i],
// zero-padded to mp rows and to even depth.
func packA16(im *impl, ap []uint32, mp int, ta bool, a unsafe.Pointer, lda, r0, rows, pc, kc int) {
	if ta {
		// A[i, p] at a[p*lda + i]: interleave rows p and p+1 of the stored A.
		interleaveRows(im, ap, mp, a, lda, pc, kc, r0, rows)
	} else {
		transposePairs(im, ap, mp, a, lda, r0, rows, pc, kc)
	}
	if rows < mp {
		for q := 0; q < (kc+1)/2; q++ {
			clear(ap[q*mp+rows : q*mp+mp])
		}
	}
}

// interleaveRows writes dst[q*ds + j] = pair(s[p0+2q, c0+j], s[p0+2q+1, c0+j])
// for j < w, q < ceil(kc/2), where s is the bf16 matrix at src with stride
// ld; a row p0+kc (odd kc) reads as zeros.
//
//	s [.., ld] rows p0.. → dst [kc2, ds] (pairs of rows, w columns)
func interleaveRows(im *impl, dst []uint32, ds int, src unsafe.Pointer, ld, p0, kc, c0, w int) {
	for q := 0; 2*q < kc; q++ {
		r0 := unsafe.Add(src, 2*((p0+2*q)*ld+c0))
		d := dst[q*ds : q*ds+w]
		if 2*q+1 == kc {
			for j := range d {
				d[j] = uint32(at16(r0, j))
			}
			continue
		}
		r1 := unsafe.Add(r0, 2*ld)
		j := 0
		if im.bf16 != nil && w >= 16 {
			im.bf16.pairRows(&d[0], (*uint16)(r0), (*uint16)(r1), w/16)
			j = w / 16 * 16
		}
		for ; j < w; j++ {
			d[j] = pair(at16(r0, j), at16(r1, j))
		}
	}
}

// transposePairs writes dst[q*ds + j] = pair(s[r0+j, p0+2q], s[r0+j, p0+2q+1])
// for j < w, q < ceil(kc/2), where s is the bf16 matrix at src with stride
// ld; the column p0+kc (odd kc) reads as zero. With an even stride the
// pairs are 32-bit words and 8×8 blocks go through transpose8.
//
//	s rows r0..r0+w, columns p0..p0+kc → dst [kc2, ds] (pairs transposed)
func transposePairs(im *impl, dst []uint32, ds int, src unsafe.Pointer, ld, r0, w, p0, kc int) {
	kf := kc / 2 // whole pairs
	jt, qt := 0, 0
	if tr := im.transpose8; tr != nil && ld%2 == 0 && kf >= 8 && w >= 8 {
		qt = kf / 8 * 8
		for ; jt+8 <= w; jt += 8 {
			s := unsafe.Add(src, 2*((r0+jt)*ld+p0))
			tr(qt/8, (*float32)(s), ld/2, (*float32)(unsafe.Pointer(&dst[jt])), ds)
		}
	}
	for j := 0; j < w; j++ {
		row := unsafe.Add(src, 2*((r0+j)*ld+p0))
		q0 := 0
		if j < jt {
			q0 = qt // pairs below qt of these rows went through transpose8
		}
		for q := q0; q < kf; q++ {
			dst[q*ds+j] = pair(at16(row, 2*q), at16(row, 2*q+1))
		}
		if kc%2 == 1 {
			dst[kf*ds+j] = uint32(at16(row, kc-1))
		}
	}
}
