package model

import (
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/igpt/igpt/internal/kernels"
)

// ClassHead is the fine-tuning classifier of the paper (§3.4): the final
// normalised hidden state n_L = rmsnorm(h_L)·g (what the LM head reads) is
// averaged over positions and projected to class logits,
//
//	f[b,C]      = (1/T) Σ_t n_L[b,t,C]
//	logits[b,K] = f · Wᵀ + bias         (W [K,C], Linear layout)
//
// and trained with the mean cross-entropy over the batch. With the model's
// generative loss it makes the paper's joint objective L_gen + L_cls:
// Model.Forward, then ClassHead.Forward on Model.FinalNormed, then
// ClassHead.Backward into a [b,T,C] buffer and Model.BackwardWith(it).
type ClassHead struct {
	D, Classes int
	W, Bias    []float32 // [K,C], [K]
	GW, GBias  []float32 // their gradients, accumulated by Backward

	pooled, logits, dlogits, dpooled []float32
	b                                int
}

// NewClassHead returns a head for d-wide features and k classes with W
// drawn from N(0, 0.02²) by seed and a zero bias.
func NewClassHead(d, k int, seed uint64) *ClassHead {
	h := &ClassHead{D: d, Classes: k,
		W: make([]float32, k*d), Bias: make([]float32, k), GW: make([]float32, k*d), GBias: make([]float32, k)}
	rng := rand.New(rand.NewPCG(seed, 0xc1a55))
	for i := range h.W {
		h.W[i] = float32(rng.NormFloat64() * 0.02)
	}
	return h
}

// Params returns the head's parameters and Grads their gradients, in the
// same order (for clipping and the optimiser).
func (h *ClassHead) Params() [][]float32 { return [][]float32{h.W, h.Bias} }

// Grads returns the gradients matching Params.
func (h *ClassHead) Grads() [][]float32 { return [][]float32{h.GW, h.GBias} }

// ZeroGrads clears the accumulated gradients.
func (h *ClassHead) ZeroGrads() {
	clear(h.GW)
	clear(h.GBias)
}

func (h *ClassHead) reserve(b int) {
	if cap(h.pooled) < b*h.D {
		h.pooled = make([]float32, b*h.D)
		h.dpooled = make([]float32, b*h.D)
		h.logits = make([]float32, b*h.Classes)
		h.dlogits = make([]float32, b*h.Classes)
	}
}

// Forward pools x [b,T,C] over positions, computes the logits and returns
// the mean cross-entropy over the sequences whose label is not negative,
// and how many of those the argmax gets right. It keeps what Backward
// needs.
func (h *ClassHead) Forward(x []float32, labels []int32, b, T int) (loss float64, correct int, err error) {
	C, K := h.D, h.Classes
	if len(x) != b*T*C || len(labels) != b {
		return 0, 0, fmt.Errorf("model: class head: %d features and %d labels for b=%d T=%d C=%d", len(x), len(labels), b, T, C)
	}
	for i, y := range labels {
		if int(y) >= K {
			return 0, 0, fmt.Errorf("model: class head: label %d of sequence %d is not below the %d classes", y, i, K)
		}
	}
	h.reserve(b)
	h.b = b
	pooled, logits := h.pooled[:b*C], h.logits[:b*K]
	meanPool(pooled, x, b, T, C)
	h.Logits(logits, pooled, b)
	loss, _ = kernels.SoftmaxCrossEntropy(h.dlogits[:b*K], logits, labels, K)
	for i, y := range labels {
		if y >= 0 && Argmax(logits[i*K:(i+1)*K]) == int(y) {
			correct++
		}
	}
	return loss, correct, nil
}

// Logits computes logits [b,K] = pooled [b,C] · Wᵀ + bias.
func (h *ClassHead) Logits(logits, pooled []float32, b int) {
	K := h.Classes
	kernels.MatMulNT(logits, pooled, h.W, b, K, h.D, false)
	for i := range b {
		row := logits[i*K : (i+1)*K]
		for k := range row {
			row[k] += h.Bias[k]
		}
	}
}

// Backward adds the gradient of the last Forward's loss, times weight, to
// GW and GBias and writes d loss/d x [b,T,C] into dx (overwritten):
//
//	dlogits = w·(softmax − onehot)/count      [b,K]
//	GW     += dlogitsᵀ · f                     [K,C]
//	GBias  += Σ_b dlogits                      [K]
//	dx[b,t] = (dlogits · W)[b] / T             for every t
func (h *ClassHead) Backward(dx []float32, weight float32, T int) {
	b, C, K := h.b, h.D, h.Classes
	dl := h.dlogits[:b*K]
	if weight != 1 {
		for i := range dl {
			dl[i] *= weight
		}
	}
	kernels.MatMulTN(h.GW, dl, h.pooled[:b*C], K, C, b, true)
	for i := range b {
		for k := range K {
			h.GBias[k] += dl[i*K+k]
		}
	}
	dp := h.dpooled[:b*C]
	kernels.MatMul(dp, dl, h.W, b, C, K, false)
	inv := 1 / float32(T)
	for i := range b {
		src := dp[i*C : (i+1)*C]
		for t := range T {
			dst := dx[(i*T+t)*C : (i*T+t+1)*C]
			for c := range dst {
				dst[c] = src[c] * inv
			}
		}
	}
}

// Predict writes the argmax class of each of the b pooled feature rows
// [b,C] into dst, using logits [b,K] as scratch.
func (h *ClassHead) Predict(dst []int32, pooled, logits []float32, b int) {
	K := h.Classes
	h.Logits(logits, pooled, b)
	for i := range b {
		dst[i] = int32(Argmax(logits[i*K : (i+1)*K]))
	}
}

// meanPool: out[b,C] = mean over t of x[b,t,C].
func meanPool(out, x []float32, B, T, C int) {
	inv := 1 / float32(T)
	for b := range B {
		o := out[b*C : (b+1)*C]
		clear(o)
		for t := range T {
			row := x[(b*T+t)*C : (b*T+t+1)*C]
			for c, v := range row {
				o[c] += v
			}
		}
		for c := range o {
			o[c] *= inv
		}
	}
}

// Argmax is the index of v's largest value (the first of ties).
func Argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// Tensor names of a ClassHead in a safetensors file (Hugging Face's
// ImageGPTForImageClassification calls its head "score").
const (
	ClassWeightName = "classifier.weight"
	ClassBiasName   = "classifier.bias"
)

// Tensors returns the head's tensors to write, names prefixed.
func (h *ClassHead) Tensors(prefix string) []WTensor {
	return []WTensor{
		{Name: prefix + ClassWeightName, Shape: []int{h.Classes, h.D}, F32: h.W},
		{Name: prefix + ClassBiasName, Shape: []int{h.Classes}, F32: h.Bias},
	}
}

// SaveClassifier writes a fine-tuned model: its parameters, the head's
// two tensors and the config, plus extra metadata, as one safetensors
// file (so weights and head are replaced together, atomically).
func SaveClassifier(w io.Writer, p *Params, h *ClassHead, extra map[string]string) error {
	if h.D != p.Config.D {
		return fmt.Errorf("model: save classifier: head for width %d on a model of width %d", h.D, p.Config.D)
	}
	if err := WriteSafetensors(w, append(paramTensors(p, ""), h.Tensors("")...), configMeta(p.Config, extra)); err != nil {
		return fmt.Errorf("model: save classifier: %w", err)
	}
	return nil
}

// LoadClassifier reads what SaveClassifier wrote.
func LoadClassifier(r io.Reader) (*Params, *ClassHead, map[string]string, error) {
	st, err := ReadSafetensors(r)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("model: load classifier: %w", err)
	}
	w, okW := st.Tensors[ClassWeightName]
	b, okB := st.Tensors[ClassBiasName]
	if !okW || !okB || len(w.Shape) != 2 || len(b.Shape) != 1 || w.Shape[0] != b.Shape[0] {
		return nil, nil, nil, fmt.Errorf("model: load classifier: want %s [K,d] and %s [K], the file has no such pair (a pretrained checkpoint, not a fine-tuned one?)", ClassWeightName, ClassBiasName)
	}
	delete(st.Tensors, ClassWeightName)
	delete(st.Tensors, ClassBiasName)
	p, err := paramsFromSafetensors(st)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("model: load classifier: %w", err)
	}
	if w.Shape[1] != p.Config.D {
		return nil, nil, nil, fmt.Errorf("model: load classifier: %s is [%d,%d] for a model of width %d", ClassWeightName, w.Shape[0], w.Shape[1], p.Config.D)
	}
	h := NewClassHead(p.Config.D, w.Shape[0], 0)
	if _, err := w.Float32s(h.W); err != nil {
		return nil, nil, nil, fmt.Errorf("model: load classifier: %s: %w", ClassWeightName, err)
	}
	if _, err := b.Float32s(h.Bias); err != nil {
		return nil, nil, nil, fmt.Errorf("model: load classifier: %s: %w", ClassBiasName, err)
	}
	return p, h, st.Metadata, nil
}
