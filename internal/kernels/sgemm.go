package kernels

import (
	"fmt"
	"unsafe"
)

// Sgemm computes, row-major,
//
//	C[m,n] = alpha·op(A)[m,k]·op(B)[k,n] + beta·C[m,n]
//
// where op(A) is A (stored m×k, row stride lda) or, with transA, Aᵀ (A
// stored k×m, row stride lda); likewise op(B) is B (stored k×n, stride ldb)
// or, with transB, Bᵀ (stored n×k). beta == 0 overwrites C without reading
// it (NaNs in C do not propagate); beta == 1 accumulates. The layouts a
// transformer needs are all covered: Y = X·W (NN), dX = dY·Wᵀ (NT) and
// dW += Xᵀ·dY (TN, beta 1).
//
// The work runs on the package's worker pool (Threads() threads) when it is
// large enough; Sgemm does not allocate in steady state. It panics if a
// slice is too short for its shape and stride.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ar, ac, br, bc := gemmShapes("Sgemm", transA, transB, m, n, k)
	checkMat("Sgemm", "A", a, ar, ac, lda)
	checkMat("Sgemm", "B", b, br, bc, ldb)
	checkMat("Sgemm", "C", c, m, n, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	runGemm(gemmJob{impl: cur, ta: transA, tb: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: unsafe.Pointer(unsafe.SliceData(a)), b: unsafe.Pointer(unsafe.SliceData(b)), c: unsafe.Pointer(unsafe.SliceData(c)),
		lda: lda, ldb: ldb, ldc: ldc})
}

// runGemm runs one GEMM on the worker pool: the job is planned into tiles
// for the pool's threads, and the pool's job slot is cleared afterwards so
// that it holds no reference to the caller's memory.
func runGemm(job gemmJob) {
	p := thePool
	p.mu.Lock()
	g := &theGemmJob
	*g = job
	g.plan(p.threads)
	p.runLocked(g.tm*g.tn, g)
	*g = gemmJob{}
	p.mu.Unlock()
}

// gemmShapes checks the sizes of a GEMM named fn and returns the shapes of
// its stored operands: A is ar×ac and B is br×bc as laid out in memory.
func gemmShapes(fn string, transA, transB bool, m, n, k int) (ar, ac, br, bc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("kernels.%s: negative size %dx%dx%d", fn, m, n, k))
	}
	ar, ac = m, k
	if transA {
		ar, ac = k, m
	}
	br, bc = k, n
	if transB {
		br, bc = n, k
	}
	return ar, ac, br, bc
}

// MatMul computes C[m,n] = A[m,k]·B[k,n] (all row-major, contiguous); with
// accumulate, C += A·B.
func MatMul(c, a, b []float32, m, n, k int, accumulate bool) {
	Sgemm(false, false, m, n, k, 1, a, k, b, n, beta(accumulate), c, n)
}

// MatMulNT computes C[m,n] = A[m,k]·B[n,k]ᵀ (e.g. dX = dY·Wᵀ); with
// accumulate, C += A·Bᵀ.
func MatMulNT(c, a, b []float32, m, n, k int, accumulate bool) {
	Sgemm(false, true, m, n, k, 1, a, k, b, k, beta(accumulate), c, n)
}

// MatMulTN computes C[m,n] = A[k,m]ᵀ·B[k,n] (e.g. dW = Xᵀ·dY); with
// accumulate, C += Aᵀ·B.
func MatMulTN(c, a, b []float32, m, n, k int, accumulate bool) {
	Sgemm(true, false, m, n, k, 1, a, m, b, n, beta(accumulate), c, n)
}

func beta(acc bool) float32 {
	if acc {
		return 1
	}
	return 0
}

// checkMat panics, naming fn, if s cannot hold a rows×cols matrix with
// row stride ld.
func checkMat[T float32 | uint16](fn, name string, s []T, rows, cols, ld int) {
	if rows == 0 || cols == 0 {
		return
	}
	if ld < cols {
		panic(fmt.Sprintf("kernels.%s: ld%s %d < %d columns", fn, name, ld, cols))
	}
	if need := extent(rows, cols, ld); len(s) < need {
		panic(fmt.Sprintf("kernels.%s: len(%s) %d < %d for %dx%d with stride %d", fn, name, len(s), need, rows, cols, ld))
	}
}

func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
		} else if beta != 1 {
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// Cache blocking. The B block (kc×nc, packed in nr-wide k-major panels) is
// shared by a task's ic loop; a kc×nr micro-panel of it stays in L1 while
// the A rows of an mc×kc block (read in place, or packed at the M edge)
// stream from L2 through the micro-kernel.
var (
	blockK  = 256 // kc: depth of a packed B panel (kc*nr*4 bytes ~ half of L1)
	blockMR = 24  // mc = blockMR*mr rows of A per block (mc*kc*4 bytes ~ a third of L2)
	blockN  = 512 // nc: width of a packed B block (kc*nc*4 bytes = 512 KiB)
)

// workspace is one worker's scratch, grown on demand and reused.
type workspace struct {
	bp   []float32 // packed B block
	ap   []float32 // packed A edge rows (k-major, mr wide)
	ar   []float32 // A block rows copied to a padded stride (aliasedStride)
	bp16 []uint32  // SgemmBF16's packed B block (k-pairs of bf16)
	ap16 []uint32  // SgemmBF16's packed A block or edge rows
	tile [1024]float32
	row  []float32 // one row of a fused producer (RMSNormForwardBF16)
	att  attnScratch
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n, n+n/8)
	}
	return s[:n]
}

type gemmJob struct {
	impl          *impl
	bf16          bool // a, b hold bf16 values (SgemmBF16)
	ta, tb        bool
	m, n, k       int
	alpha, beta   float32
	a, b, c       unsafe.Pointer
	lda, ldb, ldc int
	tm, tn        int // task grid
	ms, ns        int // rows / columns per task
}

var theGemmJob gemmJob

// minParallelFlops: below this many multiply-adds a call runs on one thread.
const minParallelFlops = 1 << 17

// plan splits C into a grid of tasks for the given thread count. Tasks are
// whole sub-GEMMs with their own packing. Splitting N costs nothing extra
// (A is read in place); splitting M packs B once per task, so N is split
// when it is wide enough.
func (g *gemmJob) plan(threads int) {
	g.tm, g.tn, g.ms, g.ns = 1, 1, g.m, g.n
	if threads <= 1 || g.m*g.n*g.k < minParallelFlops {
		return
	}
	mr, nr := g.impl.mr, g.impl.nr
	nPanels := (g.n + nr - 1) / nr
	mPanels := (g.m + mr - 1) / mr
	// A copied to a padded stride (fp32 A rows 4 KiB apart, gemmSeq):
	// split M when A is the larger operand, so that no two tasks copy the
	// same rows of A.
	copiesA := !g.bf16 && copiesARows(g.ta, g.lda) && g.m > g.n && mPanels >= 2*threads
	if !copiesA && (nPanels >= 2*threads || nPanels >= threads && mPanels < 2*threads) {
		g.tn = threads
		per := (nPanels + threads - 1) / threads
		g.ns = per * nr
		g.tn = (g.n + g.ns - 1) / g.ns
		return
	}
	per := (mPanels + threads - 1) / threads
	g.ms = per * mr
	g.tm = (g.m + g.ms - 1) / g.ms
}

func (g *gemmJob) run(t, w int) {
	i, j := t/g.tn, t%g.tn
	m0, n0 := i*g.ms, j*g.ns
	m1, n1 := min(m0+g.ms, g.m), min(n0+g.ns, g.n)
	a, b := g.a, g.b
	es := 4 // bytes per A and B value
	if g.bf16 {
		es = 2
	}
	if g.ta {
		a = unsafe.Add(a, es*m0)
	} else {
		a = unsafe.Add(a, es*m0*g.lda)
	}
	if g.tb {
		b = unsafe.Add(b, es*n0*g.ldb)
	} else {
		b = unsafe.Add(b, es*n0)
	}
	c := unsafe.Add(g.c, 4*(m0*g.ldc+n0))
	ws := &thePool.workers[w].ws
	if g.bf16 {
		gemmSeqBF16(ws, g.impl, g.ta, g.tb, m1-m0, n1-n0, g.k, g.alpha, a, g.lda, b, g.ldb, g.beta, c, g.ldc)
		return
	}
	gemmSeq(ws, g.impl, g.ta, g.tb, m1-m0, n1-n0, g.k, g.alpha, a, g.lda, b, g.ldb, g.beta, c, g.ldc)
}

// gemmSeq is the sequential blocked GEMM on one worker (m, n, k > 0).
func gemmSeq(ws *workspace, im *impl, ta, tb bool, m, n, k int, alpha float32, a unsafe.Pointer, lda int, b unsafe.Pointer, ldb int, beta float32, c unsafe.Pointer, ldc int) {
	mr, nr := im.mr, im.nr
	kcMax := min(blockK, k)
	ncMax := min(blockN, (n+nr-1)/nr*nr)
	ws.bp = grow(ws.bp, kcMax*ncMax)
	mcMax := blockMR * mr
	ws.ap = grow(ws.ap, kcMax*mr)
	// A's rows are copied, block by block, to a stride that is not a
	// multiple of 4 KiB when theirs is and the block is read by more than
	// one B panel (see aliasedStride).
	copyA := copiesARows(ta, lda) && n > nr
	kcp := kcMax + 16
	if copyA {
		ws.ar = grow(ws.ar, min(mcMax, m)*kcp)
	}
	for jc := 0; jc < n; jc += blockN {
		nc := min(blockN, n-jc)
		for pc := 0; pc < k; pc += blockK {
			kc := min(blockK, k-pc)
			bt := beta
			if pc > 0 {
				bt = 1
			}
			packB(im, ws.bp, tb, b, ldb, pc, jc, kc, nc)
			for ic := 0; ic < m; ic += mcMax {
				mc := min(mcMax, m-ic)
				mFull := mc / mr * mr
				// A is read in place by the micro-kernel (row-addressed for A,
				// column-addressed for Aᵀ); only the ragged last rows are packed.
				if mFull < mc {
					packAEdge(ws.ap, mr, ta, a, lda, ic+mFull, mc-mFull, pc, kc)
				}
				if copyA {
					copyRowsStrided(ws.ar, kcp, a, lda, ic, mFull, pc, kc)
				}
				for jr := 0; jr < nc; jr += nr {
					nrr := min(nr, nc-jr)
					bpan := &ws.bp[jr*kc]
					cc := unsafe.Add(c, 4*(ic*ldc+jc+jr))
					for ir := 0; ir < mFull; ir += mr {
						var ap *float32
						kern, sa := im.row, lda
						switch {
						case ta:
							ap, kern = (*float32)(unsafe.Add(a, 4*(pc*lda+ic+ir))), im.col
						case copyA:
							ap, sa = &ws.ar[ir*kcp], kcp
						default:
							ap = (*float32)(unsafe.Add(a, 4*((ic+ir)*lda+pc)))
						}
						ct := unsafe.Add(cc, 4*ir*ldc)
						if nrr == nr {
							kern(kc, ap, sa, bpan, (*float32)(ct), ldc, alpha, bt)
						} else {
							kern(kc, ap, sa, bpan, &ws.tile[0], nr, alpha, 0)
							mergeTile(ct, ldc, ws.tile[:], nr, mr, nrr, bt)
						}
					}
					if mFull < mc {
						im.col(kc, &ws.ap[0], mr, bpan, &ws.tile[0], nr, alpha, 0)
						mergeTile(unsafe.Add(cc, 4*mFull*ldc), ldc, ws.tile[:], nr, mc-mFull, nrr, bt)
					}
				}
			}
		}
	}
}

// aliasedStride reports whether rows ld elements of size bytes apart sit
// a multiple of 4 KiB apart. The micro-kernel reads mr such rows of A at
// once; at such a stride every row maps to the same set of the 8-way L1
// cache and they evict each other: on Zen 4 the MLP's down-projection
// (lda = 4C = 1024 floats) ran at 80 GFLOP/s on one core against 98 with
// the rows 16 floats further apart.
func aliasedStride(ld, size int) bool { return ld*size%4096 == 0 }

// copiesARows reports whether gemmSeq copies fp32 A's rows to a padded
// stride (given more than one B panel to read them): A row-addressed with
// rows a multiple of 4 KiB apart.
func copiesARows(ta bool, lda int) bool { return !ta && aliasedStride(lda, 4) }

// copyRowsStrided copies rows r0..r0+rows of A[:, pc:pc+kc] (row stride
// lda) to dst with row stride ds: dst[i*ds+p] = A[r0+i, pc+p].
func copyRowsStrided(dst []float32, ds int, a unsafe.Pointer, lda, r0, rows, pc, kc int) {
	for i := 0; i < rows; i++ {
		src := unsafe.Slice((*float32)(unsafe.Add(a, 4*((r0+i)*lda+pc))), kc)
		copy(dst[i*ds:i*ds+kc], src)
	}
}

// mergeTile writes C[0:mr, 0:nr] = tile + beta·C (tile row stride ts).
func mergeTile(c unsafe.Pointer, ldc int, tile []float32, ts, mr, nr int, beta float32) {
	for i := 0; i < mr; i++ {
		row := unsafe.Slice((*float32)(unsafe.Add(c, 4*i*ldc)), nr)
		t := tile[i*ts : i*ts+nr]
		if beta == 0 {
			copy(row, t)
		} else {
			for j := range row {
				row[j] = t[j] + beta*row[j]
			}
		}
	}
}

// packB packs op(B)[pc:pc+kc, jc:jc+nc] into nr-wide k-major panels:
// panel q holds bp[q*kc*nr + p*nr + j] = op(B)[pc+p, jc+q*nr+j], zero-padded.
func packB(im *impl, bp []float32, tb bool, b unsafe.Pointer, ldb, pc, jc, kc, nc int) {
	nr := im.nr
	for q := 0; q*nr < nc; q++ {
		j0 := jc + q*nr
		w := min(nr, nc-q*nr)
		pan := bp[q*kc*nr : (q+1)*kc*nr]
		if !tb {
			// B[p, j] at b[p*ldb + j]: rows of w contiguous floats.
			if w == nr && im.packRows != nil {
				im.packRows(&pan[0], (*float32)(unsafe.Add(b, 4*(pc*ldb+j0))), ldb, kc)
				continue
			}
			for p := 0; p < kc; p++ {
				src := unsafe.Slice((*float32)(unsafe.Add(b, 4*((pc+p)*ldb+j0))), w)
				dst := pan[p*nr : p*nr+nr]
				copy(dst, src)
				if w < nr {
					clear(dst[w:])
				}
			}
			continue
		}
		// B[p, j] at b[j*ldb + p]: transpose.
		j := 0
		k8 := 0
		if im.transpose8 != nil {
			k8 = kc / 8
			for ; j+8 <= w && k8 > 0; j += 8 {
				im.transpose8(k8, (*float32)(unsafe.Add(b, 4*((j0+j)*ldb+pc))), ldb, &pan[j], nr)
			}
		}
		// the rest: rows j.. of all p, and p >= 8*k8 of rows < j.
		for jj := 0; jj < w; jj++ {
			src := unsafe.Slice((*float32)(unsafe.Add(b, 4*((j0+jj)*ldb+pc))), kc)
			p0 := 0
			if jj < j {
				p0 = 8 * k8
			}
			for p := p0; p < kc; p++ {
				pan[p*nr+jj] = src[p]
			}
		}
		if w < nr {
			for p := 0; p < kc; p++ {
				clear(pan[p*nr+w : p*nr+nr])
			}
		}
	}
}

// packAEdge packs rows r0..r0+rows (rows < mr) of op(A)[:, pc:pc+kc]
// k-major, mr wide, zero-padded: ap[p*mr+i] = op(A)[r0+i, pc+p].
func packAEdge(ap []float32, mr int, ta bool, a unsafe.Pointer, lda, r0, rows, pc, kc int) {
	ap = ap[:kc*mr]
	clear(ap)
	if ta {
		for p := 0; p < kc; p++ {
			src := unsafe.Slice((*float32)(unsafe.Add(a, 4*((pc+p)*lda+r0))), rows)
			copy(ap[p*mr:p*mr+rows], src)
		}
		return
	}
	for i := 0; i < rows; i++ {
		src := unsafe.Slice((*float32)(unsafe.Add(a, 4*((r0+i)*lda+pc))), kc)
		for p, v := range src {
			ap[p*mr+i] = v
		}
	}
}
