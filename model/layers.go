package model

import (
	"math"

	"github.com/igpt/igpt/internal/kernels"
)

// The layers, llm.c style: one …Forward/…Backward pair per layer, working on
// flat row-major buffers. N = B·T rows; C = d channels; shapes are [rows,
// cols]. Backward functions accumulate (+=) into parameter gradients and
// into the gradient of the residual stream, and overwrite scratch.

// encoderForward builds the transformer's input:
//
//	out[B,T,C] = wte[ids[b,t], :] + wpe[t, :]      (ids < 0: zero embedding)
func encoderForward(out []float32, ids []int32, wte, wpe []float32, B, T, C int) {
	N := B * T
	kernels.EmbeddingForward(out[:N*C], ids[:N], wte, C)
	for b := 0; b < B; b++ {
		o := out[b*T*C : (b+1)*T*C]
		w := wpe[:T*C]
		for i := range o {
			o[i] += w[i]
		}
	}
}

// encoderBackward: dwte[ids[n]] += dout[n]; dwpe[pos[n]] += dout[n]
// (dout [N,C]; pos[n] = n mod T).
func encoderBackward(dwte, dwpe, dout []float32, ids, pos []int32, C int) {
	kernels.EmbeddingBackward(dwte, ids, dout, C)
	kernels.EmbeddingBackward(dwpe, pos, dout, C)
}

// rmsnormForward: out[N,C] = x·g/sqrt(mean(x²)+1e-5), rstd[N] saved.
func rmsnormForward(out, rstd, x, g []float32, N, C int) {
	kernels.RMSNormForward(out, rstd, x, g, N, C)
}

// rmsnormBackward: dx[N,C] += ∂/∂x, dg[C] += ∂/∂g of rmsnormForward.
func rmsnormBackward(dx, dg, dout, x, g, rstd []float32, N, C int) {
	kernels.RMSNormBackward(dx, dg, dout, x, g, rstd, N, C)
}

// matmulForward: out[N,OC] (=, or += with accumulate) inp[N,IC] · w[IC,OC]
// (Conv1D layout: w is input × output).
func matmulForward(out, inp, w []float32, N, IC, OC int, accumulate bool) {
	kernels.MatMul(out, inp, w, N, OC, IC, accumulate)
}

// matmulBackward of out = inp·w:
//
//	dinp[N,IC] = dout[N,OC] · wᵀ        (overwritten)
//	dw[IC,OC] += inpᵀ · dout
func matmulBackward(dinp, dw, dout, inp, w []float32, N, IC, OC int) {
	kernels.MatMulNT(dinp, dout, w, N, IC, OC, false)
	kernels.MatMulTN(dw, inp, dout, IC, OC, N, true)
}

// headForward: logits[N,V] = x[N,C] · wᵀ  (w [V,C], Linear layout).
func headForward(logits, x, w []float32, N, C, V int) {
	kernels.MatMulNT(logits, x, w, N, V, C, false)
}

// headBackward of logits = x·wᵀ:
//
//	dx[N,C] = dlogits[N,V] · w[V,C]      (overwritten)
//	dw[V,C] += dlogitsᵀ · x
func headBackward(dx, dw, dlogits, x, w []float32, N, C, V int) {
	kernels.MatMul(dx, dlogits, w, N, C, V, false)
	kernels.MatMulTN(dw, dlogits, x, V, C, N, true)
}

// blockActs holds what one block's forward pass keeps for its backward
// pass. In the forward-only path one set is shared by every layer, the
// residual is updated in place (res2 aliases the input) and gelu aliases fch.
type blockActs struct {
	ln1     []float32 // [N, C]   norm(h, ln_1)
	ln1Rstd []float32 // [N]
	qkv     []float32 // [N, 3C]  q | k | v
	atty    []float32 // [N, C]   attention output, heads concatenated
	lse     []float32 // [B, H, T] per-row logsumexp of the scores
	res2    []float32 // [N, C]   h + attn(norm(h))
	ln2     []float32 // [N, C]   norm(res2, ln_2)
	ln2Rstd []float32 // [N]
	fch     []float32 // [N, 4C]  norm(res2)·c_fc (before GELU)
	gelu    []float32 // [N, 4C]  quick_gelu(fch)
	b16     *actsBF16 // bf16 copies of ln1, atty, ln2, gelu (BF16 training only)
}

// newBlockActs allocates one block's activations. In bf16 training the
// norms' and the GELU's outputs exist only as their bf16 copies (b16):
// ln1, ln2 and gelu stay nil.
func newBlockActs(B, T, C, H int, inference bool, prec Precision) blockActs {
	N := B * T
	a := blockActs{
		ln1Rstd: make([]float32, N),
		qkv:     make([]float32, N*3*C), atty: make([]float32, N*C), lse: make([]float32, B*H*T),
		ln2Rstd: make([]float32, N),
		fch:     make([]float32, N*4*C),
	}
	switch {
	case inference:
		a.ln1, a.ln2 = make([]float32, N*C), make([]float32, N*C)
		a.gelu = a.fch
	case prec == BF16:
		a.res2 = make([]float32, N*C)
		b := newActsBF16(N, C)
		a.b16 = &b
	default:
		a.ln1, a.ln2 = make([]float32, N*C), make([]float32, N*C)
		a.res2 = make([]float32, N*C)
		a.gelu = make([]float32, N*4*C)
	}
	return a
}

// blockLinears returns a block's four linear layers: c_attn, attn.c_proj,
// c_fc, mlp.c_proj. With w16 nil they are fp32; else bf16, reading the
// bf16 weights w16, keeping their inputs' bf16 copies in a.b16 and
// rounding output gradients into d16 [N·4C].
func blockLinears(p *LayerParams, w16 *layerBF16, a *blockActs, d16 []uint16) (qkv, proj, fc, mproj linear) {
	qkv, proj, fc, mproj = linear{w: p.CAttn}, linear{w: p.AttnProj}, linear{w: p.FC}, linear{w: p.MLPProj}
	if w16 == nil {
		return
	}
	b := a.b16
	qkv.w16, qkv.x16, qkv.d16 = w16.cAttn, b.ln1, d16
	proj.w16, proj.x16, proj.d16 = w16.attnProj, b.atty, d16
	fc.w16, fc.x16, fc.d16 = w16.fc, b.ln2, d16
	mproj.w16, mproj.x16, mproj.d16 = w16.mlpProj, b.gelu, d16
	return
}

// blockForward runs one pre-norm transformer block:
//
//	res2[N,C] = in + (attention(norm(in, ln_1)·c_attn) · attn.c_proj)
//	out[N,C]  = res2 + quick_gelu(norm(res2, ln_2)·c_fc) · mlp.c_proj
//
// With res2 == nil (forward-only path) the residual is updated in place in
// in, and out must be in. w16 non-nil runs the linear layers in bf16 (see
// blockLinears; a.b16 must be allocated).
func blockForward(out, in []float32, p *LayerParams, w16 *layerBF16, a *blockActs, B, T, C, H int, causal bool) {
	N := B * T
	res2 := a.res2
	if res2 == nil {
		res2 = in
	}
	qkvL, projL, fcL, mprojL := blockLinears(p, w16, a, nil)
	// In bf16 the norms and the GELU write their outputs straight into the
	// bf16 copies the linear layers read (ln1, ln2, gelu stay unwritten).
	ln1 := normInto(a.ln1, qkvL.x16, a.ln1Rstd, in, p.LN1, N, C)
	qkvL.forward(a.qkv, ln1, N, C, 3*C, false)                         // [N,3C]
	kernels.AttentionForward(a.atty, a.lse, a.qkv, B, T, C, H, causal) // [N,C]
	copyRows(res2, in, N*C)
	projL.forward(res2, a.atty, N, C, C, true)
	ln2 := normInto(a.ln2, fcL.x16, a.ln2Rstd, res2, p.LN2, N, C)
	fcL.forward(a.fch, ln2, N, C, 4*C, false) // [N,4C]
	var gelu []float32                        // nil in bf16: mproj reads its x16
	if mprojL.x16 != nil {
		kernels.QuickGELUForwardBF16(mprojL.x16[:N*4*C], a.fch[:N*4*C])
	} else {
		gelu = a.gelu[:N*4*C]
		kernels.QuickGELUForward(gelu, a.fch[:N*4*C])
	}
	copyRows(out, res2, N*C)
	mprojL.forward(out, gelu, N, 4*C, C, true)
}

// blockScratch is the backward pass's scratch, shared by every layer.
type blockScratch struct {
	big   []float32 // [N, 4C]: dgelu/dfch, then dqkv [N,3C]
	datty []float32 // [N, C]
	dln   []float32 // [N, C]
	d16   []uint16  // [N, 4C]: a linear layer's output gradient in bf16 (BF16 only)
}

// blockBackward takes dres[N,C] = ∂loss/∂out and turns it, in place, into
// ∂loss/∂in; parameter gradients accumulate into g. w16 is the forward
// pass's (nil: fp32).
func blockBackward(dres, in []float32, p, g *LayerParams, w16 *layerBF16, a *blockActs, s *blockScratch, B, T, C, H int, causal bool) {
	N := B * T
	qkvL, projL, fcL, mprojL := blockLinears(p, w16, a, s.d16)
	// MLP: out = res2 + gelu(fch)·MLPProj, fch = ln2·FC
	dfch := s.big[:N*4*C]
	mprojL.backward(dfch, g.MLPProj, dres, a.gelu, N, 4*C, C)
	if fcL.d16 != nil { // bf16: ∂/∂fch goes straight into fc's d16
		kernels.QuickGELUBackwardBF16(fcL.d16[:N*4*C], a.fch[:N*4*C], dfch)
		dfch = nil
	} else {
		kernels.QuickGELUBackward(dfch, a.fch[:N*4*C], dfch)
	}
	fcL.backward(s.dln, g.FC, dfch, a.ln2, N, C, 4*C)
	rmsnormBackward(dres, g.LN2, s.dln, a.res2, p.LN2, a.ln2Rstd, N, C) // dres is now ∂/∂res2
	// attention: res2 = in + atty·AttnProj, atty = attn(qkv), qkv = ln1·CAttn
	projL.backward(s.datty, g.AttnProj, dres, a.atty, N, C, C)
	dqkv := s.big[:N*3*C]
	kernels.AttentionBackward(dqkv, s.datty, a.atty, a.lse, a.qkv, B, T, C, H, causal)
	qkvL.backward(s.dln, g.CAttn, dqkv, a.ln1, N, C, 3*C)
	rmsnormBackward(dres, g.LN1, s.dln, in, p.LN1, a.ln1Rstd, N, C) // dres is now ∂/∂in
}

// copyRows copies n values unless dst and src are the same memory.
func copyRows(dst, src []float32, n int) {
	if n == 0 || &dst[0] == &src[0] {
		return
	}
	copy(dst[:n], src[:n])
}

// probeFeatures: feat[B,C] = mean over t of h[b,t,:]/sqrt(mean(h²)+1e-5)
// (the norm with gain 1), accumulated in float64 (acc [C] is scratch).
func probeFeatures(feat, h []float32, acc []float64, B, T, C int) {
	for b := 0; b < B; b++ {
		clear(acc[:C])
		for t := 0; t < T; t++ {
			normAdd(acc[:C], h[(b*T+t)*C:(b*T+t+1)*C])
		}
		f := feat[b*C : (b+1)*C]
		for i := range f {
			f[i] = float32(acc[i] / float64(T))
		}
	}
}

// normAdd: acc[C] += x[C]/sqrt(mean(x²)+1e-5), x one position's state.
func normAdd(acc []float64, x []float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(float64(ss/float32(len(x)))+kernels.RMSNormEps)
	for i, v := range x {
		acc[i] += float64(v) * r
	}
}

// probeFeaturesGrid: the probe features pooled over an n×n grid of regions
// of the gh×gw token grid (T = gh·gw, row-major) instead of over all of it:
// feat[B, n·n, C], region (i, j) holding the mean of norm(h[b,t,:]) over
// the positions t = r·gw+c with r·n/gh = i and c·n/gw = j (Coates, Lee & Ng
// 2011 pool their features over quadrants, n = 2). n = 1 is probeFeatures.
// acc [n·n·C] and cnt [n·n] are scratch.
func probeFeaturesGrid(feat, h []float32, acc []float64, cnt []int, B, gh, gw, n, C int) {
	T, R := gh*gw, n*n
	for b := 0; b < B; b++ {
		clear(acc[:R*C])
		clear(cnt[:R])
		for t := 0; t < T; t++ {
			reg := (t/gw*n/gh)*n + t%gw*n/gw
			normAdd(acc[reg*C:(reg+1)*C], h[(b*T+t)*C:(b*T+t+1)*C])
			cnt[reg]++
		}
		f := feat[b*R*C : (b+1)*R*C]
		for reg := 0; reg < R; reg++ {
			for i := 0; i < C; i++ {
				f[reg*C+i] = float32(acc[reg*C+i] / float64(cnt[reg]))
			}
		}
	}
}
