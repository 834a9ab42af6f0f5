package model

import (
	"fmt"

	"github.com/igpt/igpt/internal/kernels"
)

// Precision is the arithmetic of the training step's linear layers.
type Precision int

const (
	// FP32: every matrix product in float32 (the default).
	FP32 Precision = iota
	// BF16: the transformer blocks' linear layers (c_attn, attn.c_proj,
	// c_fc, mlp.c_proj), forward and backward, multiply bf16 operands with
	// fp32 accumulation (kernels.SgemmBF16). The master weights, their
	// gradients, the optimizer state, the embeddings, norms, attention,
	// GELU, the LM head and the loss stay float32. Weights are rounded to
	// bf16 once per Forward (once per step without gradient accumulation),
	// activations and output gradients once as they are produced, and each
	// rounded copy serves every product that reads it.
	BF16
)

func (p Precision) String() string {
	switch p {
	case FP32:
		return "fp32"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("Precision(%d)", int(p))
}

// ParsePrecision parses "fp32" or "bf16" ("" is fp32).
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "", "fp32", "FP32":
		return FP32, nil
	case "bf16", "BF16":
		return BF16, nil
	}
	return 0, fmt.Errorf("model: unknown precision %q (want fp32 or bf16)", s)
}

// Check reports whether this CPU runs the precision at speed: BF16 needs
// the AVX512_BF16 kernels (the error names the flag). A model in BF16
// computes the same values without them, only no faster than FP32.
func (p Precision) Check() error {
	if p == BF16 {
		return kernels.CheckBF16()
	}
	return nil
}

// layerBF16 is one block's matmul weights rounded to bf16 (same layouts).
type layerBF16 struct {
	cAttn, attnProj, fc, mlpProj []uint16
}

// weightsBF16 rounds the blocks' matmul weights into m.w16 (allocated on
// first use): the bf16 copies a BF16 Forward and Backward read.
func (m *Model) weightsBF16() []layerBF16 {
	L, d := m.Config.Layers, m.Config.D
	if len(m.w16) != L {
		buf := make([]uint16, L*12*d*d)
		m.w16 = make([]layerBF16, L)
		for l := range m.w16 {
			take := func(n int) []uint16 {
				s := buf[:n:n]
				buf = buf[n:]
				return s
			}
			m.w16[l] = layerBF16{cAttn: take(3 * d * d), attnProj: take(d * d), fc: take(4 * d * d), mlpProj: take(4 * d * d)}
		}
	}
	for l := range m.w16 {
		p, w := &m.Params.Layers[l], &m.w16[l]
		kernels.ToBF16(w.cAttn, p.CAttn)
		kernels.ToBF16(w.attnProj, p.AttnProj)
		kernels.ToBF16(w.fc, p.FC)
		kernels.ToBF16(w.mlpProj, p.MLPProj)
	}
	return m.w16
}

// actsBF16 is one block's bf16 copies of the linear layers' inputs, kept
// from the forward pass for the weight gradients.
type actsBF16 struct {
	ln1  []uint16 // [N, C]
	atty []uint16 // [N, C]
	ln2  []uint16 // [N, C]
	gelu []uint16 // [N, 4C]
}

func newActsBF16(N, C int) actsBF16 {
	return actsBF16{ln1: make([]uint16, N*C), atty: make([]uint16, N*C), ln2: make([]uint16, N*C), gelu: make([]uint16, N*4*C)}
}

// linear is one linear layer's operands: its fp32 weight and, in bf16, the
// weight's bf16 copy, the input's bf16 copy (filled by forward) and the
// scratch its output gradient is rounded into (backward).
type linear struct {
	w   []float32
	w16 []uint16 // nil: fp32
	x16 []uint16
	d16 []uint16
}

// forward: out[N,OC] (=, or += with accumulate) inp[N,IC]·w[IC,OC]. In
// bf16 the input is x16: rounded into it from inp here, or, with inp nil,
// already written there by its producer.
func (ln linear) forward(out, inp []float32, N, IC, OC int, accumulate bool) {
	if ln.w16 == nil {
		matmulForward(out, inp, ln.w, N, IC, OC, accumulate)
		return
	}
	if inp != nil {
		kernels.ToBF16(ln.x16[:N*IC], inp[:N*IC])
	}
	kernels.MatMulBF16(out, ln.x16, ln.w16, N, OC, IC, accumulate)
}

// backward of out = inp·w: dinp[N,IC] = dout·wᵀ (overwritten), dw[IC,OC]
// += inpᵀ·dout. In bf16 inp is the forward pass's x16 and dout is d16,
// rounded into it once for both products (or, with dout nil, already
// written there by its producer).
func (ln linear) backward(dinp, dw, dout, inp []float32, N, IC, OC int) {
	if ln.w16 == nil {
		matmulBackward(dinp, dw, dout, inp, ln.w, N, IC, OC)
		return
	}
	d16 := ln.d16[:N*OC]
	if dout != nil {
		kernels.ToBF16(d16, dout[:N*OC])
	}
	kernels.MatMulNTBF16(dinp, d16, ln.w16, N, IC, OC, false)
	kernels.MatMulTNBF16(dw, ln.x16, d16, IC, OC, N, true)
}

// normInto is rmsnormForward into out, or, in bf16 (out16 not nil),
// straight into the bf16 copy the next linear layer reads; it returns what
// that layer's forward takes as its input (nil: its x16).
func normInto(out []float32, out16 []uint16, rstd, x, g []float32, N, C int) []float32 {
	if out16 == nil {
		rmsnormForward(out, rstd, x, g, N, C)
		return out
	}
	kernels.RMSNormForwardBF16(out16[:N*C], rstd, x, g, N, C)
	return nil
}
