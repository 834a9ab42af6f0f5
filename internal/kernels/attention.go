package kernels

import (
	"fmt"
	"math"
	"unsafe"
)

// Fused multi-head attention, flash-attention style (FlashAttention-2's
// loop order): scores are made tile by tile with the SGEMM micro-kernels,
// soft-maxed online (running max and sum per row) and multiplied into V at
// once, so no T×T matrix exists in memory; each worker holds one
// (query tile × key tile) block. The backward pass recomputes the
// probabilities from the saved per-row logsumexp.
//
// Layout (GPT's fused projection, as in llm.c):
//
//	qkv  [B, T, 3C]  row (b,t) = q | k | v, each C = H·hd wide; head h uses
//	                 columns h·hd:(h+1)·hd of each part
//	out  [B, T, C]   heads concatenated in the same way
//	lse  [B, H, T]   logsumexp of row t's scaled scores (saved for backward)
//
// Scores are q·k/sqrt(hd); causal masks key s > query t (autoregressive),
// non-causal (BERT) attends to all T keys. Work is parallel over (b, h).

// Tile sizes: queries per tile (a multiple of the kernel's mr) and keys per
// tile (a multiple of its nr).
const (
	attnQueries = 64
	attnKeys    = 128
)

type attnScratch struct {
	kT, vT   []float32 // Kᵀ and Vᵀ packed as B panels (kc = hd, n = T)
	vN, kN   []float32 // V and K packed as B panels per key tile (kc = keys, n = hd)
	qN, doN  []float32 // Q and dO packed per query tile (kc = queries, n = hd)
	s, dp    []float32 // score / probability tile and dP tile [br, sb]
	o        []float32 // output accumulator [br, hdp] (forward); dQ [tp, hdp] (backward)
	dk, dv   []float32 // dK, dV accumulators of a key tile [bcp, hdp]
	m, l, dd []float32 // running max, running sum (forward); D = rowsum(dO∘O) (backward)
}

type attnGeom struct {
	B, T, C, H, hd int
	causal         bool
	scale          float32
	br, bc         int // query / key tile sizes
	sb             int // row stride of score tiles (>= bc, multiple of mr and nr)
	hdp            int // hd rounded up to nr
	tp             int // T rounded up to br
}

func attnGeometry(im *impl, B, T, C, H int, causal bool) attnGeom {
	if H <= 0 || C%H != 0 {
		panic(fmt.Sprintf("kernels: attention with C = %d not divisible into H = %d heads", C, H))
	}
	g := attnGeom{B: B, T: T, C: C, H: H, hd: C / H, causal: causal}
	g.scale = float32(1 / math.Sqrt(float64(g.hd)))
	mr, nr := im.mr, im.nr
	g.br = (attnQueries + mr - 1) / mr * mr
	g.bc = (attnKeys + nr - 1) / nr * nr
	g.sb = (g.bc + mr - 1) / mr * mr
	g.sb = (g.sb + nr - 1) / nr * nr
	g.hdp = (g.hd + nr - 1) / nr * nr
	g.tp = (T + g.br - 1) / g.br * g.br
	return g
}

func (g *attnGeom) prepare(ws *attnScratch, backward bool) {
	tn := (g.T + g.bc - 1) / g.bc * g.bc // keys rounded up to whole tiles (and nr)
	ws.kT = grow(ws.kT, g.hd*tn)
	ws.vN = grow(ws.vN, tn*g.hdp)
	ws.s = grow(ws.s, g.br*g.sb)
	ws.m = grow(ws.m, g.tp)
	ws.l = grow(ws.l, g.tp)
	if !backward {
		ws.o = grow(ws.o, g.br*g.hdp)
		return
	}
	ws.vT = grow(ws.vT, g.hd*tn)
	ws.kN = grow(ws.kN, tn*g.hdp)
	ws.qN = grow(ws.qN, g.tp*g.hdp)
	ws.doN = grow(ws.doN, g.tp*g.hdp)
	ws.dp = grow(ws.dp, g.br*g.sb)
	ws.o = grow(ws.o, (g.tp+g.br)*g.hdp)
	ws.dk = grow(ws.dk, g.sb*g.hdp)
	ws.dv = grow(ws.dv, g.sb*g.hdp)
	ws.dd = grow(ws.dd, g.tp)
}

// AttentionForward computes out = softmax(q·kᵀ/sqrt(hd) [+ causal mask])·v
// per (batch, head) and saves lse for AttentionBackward (see the layout
// above): qkv [B,T,3C] → out [B,T,C], lse [B,H,T].
func AttentionForward(out, lse, qkv []float32, B, T, C, H int, causal bool) {
	need("qkv", qkv, B*T*3*C)
	need("out", out, B*T*C)
	need("lse", lse, B*H*T)
	if B*T*C == 0 {
		return
	}
	do(&theAttn, attnJob{attnGeometry(cur, B, T, C, H, causal), cur, out, lse, qkv, nil, nil}, B*H)
}

// AttentionBackward computes dqkv [B,T,3C] (overwritten) from dout [B,T,C]
// and the forward's out, lse and qkv.
func AttentionBackward(dqkv, dout, out, lse, qkv []float32, B, T, C, H int, causal bool) {
	need("qkv", qkv, B*T*3*C)
	need("dqkv", dqkv, B*T*3*C)
	need("out", out, B*T*C)
	need("dout", dout, B*T*C)
	need("lse", lse, B*H*T)
	if B*T*C == 0 {
		return
	}
	do(&theAttn, attnJob{attnGeometry(cur, B, T, C, H, causal), cur, out, lse, qkv, dout, dqkv}, B*H)
}

type attnJob struct {
	g             attnGeom
	im            *impl
	out, lse, qkv []float32
	dout, dqkv    []float32 // backward only
}

var theAttn attnJob

func (j *attnJob) run(t, w int) {
	ws := &thePool.workers[w].ws
	if j.dqkv == nil {
		j.forward(ws, t/j.g.H, t%j.g.H)
	} else {
		j.backward(ws, t/j.g.H, t%j.g.H)
	}
}

// Causal structure of a tile product, with diag = i0 − j0 (query tile
// start minus key tile start): query i (local) sees key c (local) iff
// c <= i + diag. Micro-tiles that the mask zeroes are skipped.
const (
	maskNone   = iota
	maskOutKey // C's columns are keys, rows queries: skip panels past the diagonal
	maskKKey   // A's columns (the k dimension) are keys: shorten k per row block
	maskKQuery // A is column-addressed with M = keys and k = queries: start k at the diagonal
)

// tileGemm computes C[0:rows, 0:n] (stride ldc; rows and n are rounded up
// to mr and nr, and C must have room) = alpha·op(A)·Bp + beta·C over depth
// kc, where Bp holds nr-wide packed panels pstride deep (pstride >= kc) and
// A[i,p] is at a[i*sa+p] (col false) or a[i+p*sa] (col true). With inPlace
// false the rows past the last whole mr block are packed first (A has no
// room there); with inPlace true A must have room. mask and diag skip
// work that the causal mask zeroes (see maskOutKey...).
func tileGemm(ws *workspace, im *impl, rows, n, kc, pstride int, alpha float32, a unsafe.Pointer, sa int, col, inPlace bool,
	bp []float32, beta float32, c []float32, ldc int, mask, diag int) {
	mr, nr := im.mr, im.nr
	full := rows
	if !inPlace {
		full = rows / mr * mr
		if full < rows {
			ws.ap = grow(ws.ap, kc*mr)
			packAEdge(ws.ap, mr, col, a, sa, full, rows-full, 0, kc)
		}
	}
	kern := im.row
	if col {
		kern = im.col
	}
	for ir := 0; ir < rows; ir += mr {
		k0, k1 := 0, kc
		switch mask {
		case maskKKey:
			k1 = min(kc, ir+mr+diag)
		case maskKQuery:
			k0 = max(0, ir-diag)
		}
		if k1 <= k0 {
			continue // beta is 1 for these products: nothing to add
		}
		var ap unsafe.Pointer
		kr, sr := kern, sa
		if ir >= full {
			ap, kr, sr = unsafe.Pointer(&ws.ap[0]), im.col, mr
		} else if col {
			ap = unsafe.Add(a, 4*ir)
		} else {
			ap = unsafe.Add(a, 4*ir*sa)
		}
		if col || ir >= full {
			ap = unsafe.Add(ap, 4*k0*sr)
		} else {
			ap = unsafe.Add(ap, 4*k0)
		}
		for q := 0; q*nr < n; q++ {
			if mask == maskOutKey && q*nr > ir+mr-1+diag {
				break
			}
			kr(k1-k0, (*float32)(ap), sr, &bp[q*pstride*nr+k0*nr], &c[ir*ldc+q*nr], ldc, alpha, beta)
		}
	}
}

func (j *attnJob) forward(ws0 *workspace, b, h int) {
	g := &j.g
	ws := &ws0.att
	g.prepare(ws, false)
	im := j.im
	T, C3, hd := g.T, 3*g.C, g.hd
	base := unsafe.Pointer(&j.qkv[b*T*C3])
	qp := unsafe.Add(base, 4*(h*hd))
	kp := unsafe.Add(base, 4*(g.C+h*hd))
	vp := unsafe.Add(base, 4*(2*g.C+h*hd))
	// Kᵀ as B panels (depth hd, T keys); V as B panels per key tile.
	packB(im, ws.kT, true, kp, C3, 0, 0, hd, T)
	for j0 := 0; j0 < T; j0 += g.bc {
		packB(im, ws.vN[j0*g.hdp:], false, vp, C3, j0, 0, min(g.bc, T-j0), hd)
	}
	lse := j.lse[(b*g.H+h)*T : (b*g.H+h)*T+T]
	S, O, M, L := ws.s, ws.o, ws.m, ws.l
	for i0 := 0; i0 < T; i0 += g.br {
		rows := min(g.br, T-i0)
		for r := 0; r < rows; r++ {
			M[r], L[r] = float32(math.Inf(-1)), 0
		}
		clear(O[:g.br*g.hdp])
		kEnd := T
		if g.causal {
			kEnd = i0 + rows
		}
		qa := unsafe.Add(qp, 4*i0*C3)
		for j0 := 0; j0 < kEnd; j0 += g.bc {
			cols := min(g.bc, kEnd-j0)
			// V_j was packed with depth colsK >= cols; P's columns past cols are zero.
			colsK := min(g.bc, T-j0)
			colsP := (colsK + im.nr - 1) / im.nr * im.nr
			// S = scale · Q_i · K_jᵀ
			tileGemm(ws0, im, rows, cols, hd, hd, g.scale, qa, C3, false, false, ws.kT[j0*hd:], 0, S, g.sb, mk(g.causal, maskOutKey), i0-j0)
			for r := 0; r < rows; r++ {
				srow := S[r*g.sb : r*g.sb+colsP]
				ce := cols
				if g.causal {
					ce = min(cols, i0+r-j0+1)
				}
				if ce <= 0 {
					clear(srow)
					continue
				}
				mx := max(M[r], maxf(srow[:ce]))
				sum := expSubSum(srow[:ce], mx)
				clear(srow[ce:])
				if M[r] != mx {
					f := exp32(M[r] - mx)
					L[r] *= f
					orow := O[r*g.hdp : r*g.hdp+hd]
					for i := range orow {
						orow[i] *= f
					}
					M[r] = mx
				}
				L[r] += sum
			}
			// O += P · V_j
			tileGemm(ws0, im, rows, hd, cols, colsK, 1, unsafe.Pointer(&S[0]), g.sb, false, true, ws.vN[j0*g.hdp:], 1, O, g.hdp, mk(g.causal, maskKKey), i0-j0)
		}
		for r := 0; r < rows; r++ {
			inv := 1 / L[r]
			dst := j.out[(b*T+i0+r)*g.C+h*hd : (b*T+i0+r)*g.C+h*hd+hd]
			src := O[r*g.hdp : r*g.hdp+hd]
			for i := range dst {
				dst[i] = src[i] * inv
			}
			lse[i0+r] = M[r] + float32(math.Log(float64(L[r])))
		}
	}
}

func (j *attnJob) backward(ws0 *workspace, b, h int) {
	g := &j.g
	ws := &ws0.att
	g.prepare(ws, true)
	T, C, C3, hd, hdp := g.T, g.C, 3*g.C, g.hd, g.hdp
	p := j.backwardPack(ws, b, h)
	dQ := ws.o
	clear(dQ[:(g.tp+g.br)*hdp])
	for j0 := 0; j0 < T; j0 += g.bc {
		cols := min(g.bc, T-j0)
		clear(ws.dk[:g.sb*hdp])
		clear(ws.dv[:g.sb*hdp])
		i0 := 0
		if g.causal {
			i0 = j0 / g.br * g.br
		}
		for ; i0 < T; i0 += g.br {
			j.backwardTile(ws0, &p, i0, j0, cols)
		}
		for c := 0; c < cols; c++ {
			row := j.dqkv[(b*T+j0+c)*C3:]
			copy(row[C+h*hd:C+h*hd+hd], ws.dk[c*hdp:c*hdp+hd])
			copy(row[2*C+h*hd:2*C+h*hd+hd], ws.dv[c*hdp:c*hdp+hd])
		}
	}
	for t := 0; t < T; t++ {
		copy(j.dqkv[(b*T+t)*C3+h*hd:(b*T+t)*C3+h*hd+hd], dQ[t*hdp:t*hdp+hd])
	}
}

// attnBwdHead is one (batch, head)'s inputs to the backward tiles: Q and
// dO in the caller's memory, and the log-sum-exp of each query.
type attnBwdHead struct {
	qp, dop unsafe.Pointer
	lse     []float32
}

// backwardPack computes D[t] = dO[t]·O[t] into ws.dd and packs Kᵀ, Vᵀ, K,
// Q and dO of head h of batch b for the tiles.
func (j *attnJob) backwardPack(ws *attnScratch, b, h int) attnBwdHead {
	g := &j.g
	im := j.im
	T, C, C3, hd, hdp := g.T, g.C, 3*g.C, g.hd, g.hdp
	base := unsafe.Pointer(&j.qkv[b*T*C3])
	qp := unsafe.Add(base, 4*(h*hd))
	kp := unsafe.Add(base, 4*(C+h*hd))
	vp := unsafe.Add(base, 4*(2*C+h*hd))
	dop := unsafe.Pointer(&j.dout[b*T*C+h*hd])
	// D[t] = dO[t]·O[t]
	D := ws.dd
	for t := 0; t < T; t++ {
		o := j.out[(b*T+t)*C+h*hd : (b*T+t)*C+h*hd+hd]
		do := j.dout[(b*T+t)*C+h*hd : (b*T+t)*C+h*hd+hd]
		var s float32
		for i := range o {
			s += o[i] * do[i]
		}
		D[t] = s
	}
	packB(im, ws.kT, true, kp, C3, 0, 0, hd, T)
	packB(im, ws.vT, true, vp, C3, 0, 0, hd, T)
	for j0 := 0; j0 < T; j0 += g.bc {
		packB(im, ws.kN[j0*hdp:], false, kp, C3, j0, 0, min(g.bc, T-j0), hd)
	}
	for i0 := 0; i0 < T; i0 += g.br {
		rows := min(g.br, T-i0)
		packB(im, ws.qN[i0*hdp:], false, qp, C3, i0, 0, rows, hd)
		packB(im, ws.doN[i0*hdp:], false, dop, C, i0, 0, rows, hd)
	}
	return attnBwdHead{qp: qp, dop: dop, lse: j.lse[(b*g.H+h)*T : (b*g.H+h)*T+T]}
}

// backwardTile adds query tile i0's contribution to dK_j, dV_j (key tile
// j0 of cols keys) and dQ_i.
func (j *attnJob) backwardTile(ws0 *workspace, p *attnBwdHead, i0, j0, cols int) {
	g := &j.g
	ws := &ws0.att
	im := j.im
	T, C, C3, hd, hdp := g.T, g.C, 3*g.C, g.hd, g.hdp
	S, dP, dQ, D := ws.s, ws.dp, ws.o, ws.dd
	rows := min(g.br, T-i0)
	qa := unsafe.Add(p.qp, 4*i0*C3)
	// P = exp(scale·Q_i·K_jᵀ − lse)
	diag := i0 - j0
	tileGemm(ws0, im, rows, cols, hd, hd, g.scale, qa, C3, false, false, ws.kT[j0*hd:], 0, S, g.sb, mk(g.causal, maskOutKey), diag)
	for r := 0; r < rows; r++ {
		srow := S[r*g.sb : r*g.sb+g.sb]
		ce := cols
		if g.causal {
			ce = min(cols, i0+r-j0+1)
		}
		if ce <= 0 {
			clear(srow)
			continue
		}
		expSubSum(srow[:ce], p.lse[i0+r])
		clear(srow[ce:])
	}
	// dV_j += P_iᵀ · dO_i
	tileGemm(ws0, im, cols, hd, rows, rows, 1, unsafe.Pointer(&S[0]), g.sb, true, true, ws.doN[i0*hdp:], 1, ws.dv, hdp, mk(g.causal, maskKQuery), diag)
	// dP = dO_i · V_jᵀ
	tileGemm(ws0, im, rows, cols, hd, hd, 1, unsafe.Add(p.dop, 4*i0*C), C, false, false, ws.vT[j0*hd:], 0, dP, g.sb, mk(g.causal, maskOutKey), diag)
	// dS = P ∘ (dP − D) where P may be non-zero (elsewhere S stays 0)
	for r := 0; r < rows; r++ {
		ce := cols
		if g.causal {
			ce = min(cols, i0+r-j0+1)
		}
		if ce <= 0 {
			continue
		}
		subMul(S[r*g.sb:r*g.sb+ce], dP[r*g.sb:r*g.sb+ce], D[i0+r])
	}
	// dQ_i += scale · dS · K_j
	tileGemm(ws0, im, rows, hd, cols, cols, g.scale, unsafe.Pointer(&S[0]), g.sb, false, true, ws.kN[j0*hdp:], 1, dQ[i0*hdp:], hdp, mk(g.causal, maskKKey), diag)
	// dK_j += scale · dSᵀ · Q_i
	tileGemm(ws0, im, cols, hd, rows, rows, g.scale, unsafe.Pointer(&S[0]), g.sb, true, true, ws.qN[i0*hdp:], 1, ws.dk, hdp, mk(g.causal, maskKQuery), diag)
}

func mk(causal bool, m int) int {
	if causal {
		return m
	}
	return maskNone
}
