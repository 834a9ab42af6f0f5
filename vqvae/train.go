package vqvae

import (
	"fmt"
	"io"
	"strconv"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/model"
)

// Adam trains a Model's Params (not the codebook, which follows its EMA).
type Adam struct {
	LR, Beta1, Beta2, Eps float32
	Step                  int
	M, V                  [][]float32 // moments, one per Param
}

// NewAdam returns Adam with zero moments for m's parameters.
func NewAdam(m *Model, lr, beta1, beta2, eps float32) *Adam {
	a := &Adam{LR: lr, Beta1: beta1, Beta2: beta2, Eps: eps}
	for _, p := range m.Params {
		a.M = append(a.M, make([]float32, len(p.W)))
		a.V = append(a.V, make([]float32, len(p.W)))
	}
	return a
}

// Update applies one Adam step with the gradients in Param.G.
func (a *Adam) Update(m *Model) {
	a.Step++
	for i, p := range m.Params {
		kernels.AdamW(p.W, p.G, a.M[i], a.V[i], a.Step, a.LR, a.Beta1, a.Beta2, a.Eps, 0)
	}
}

// TrainStep is one training step on x [n,h,w,3]: forward, backward, the
// codebook's EMA update (and restarts), Adam. It returns the forward
// pass's statistics and the number of codes restarted.
func TrainStep(m *Model, a *Adam, x []float32, n, h, w int, dataVar float64) (Stats, int, error) {
	s, err := m.Forward(x, n, h, w, dataVar)
	if err != nil {
		return s, 0, err
	}
	m.Backward(dataVar)
	r := m.UpdateCodebook()
	a.Update(m)
	return s, r, nil
}

// moments lists the moments as tensors over a's memory, named
// "m.<name>" and "v.<name>" after the model's parameters.
func (a *Adam) moments(m *Model) []Weight {
	var ws []Weight
	for _, part := range []struct {
		prefix string
		s      [][]float32
	}{{"m.", a.M}, {"v.", a.V}} {
		for i, p := range m.Params {
			ws = append(ws, Weight{part.prefix + p.Name, kernels.Dense(part.s[i], p.Shape...)})
		}
	}
	return ws
}

// Save writes the moments ("m.<name>", "v.<name>") and the step.
func (a *Adam) Save(w io.Writer, m *Model) error {
	var ts []model.WTensor
	for _, wt := range a.moments(m) {
		t, err := model.WTensorOf(wt.Name, wt.T)
		if err != nil {
			return fmt.Errorf("vqvae: save optimizer: %w", err)
		}
		ts = append(ts, t)
	}
	if err := model.WriteSafetensors(w, ts, map[string]string{"step": strconv.Itoa(a.Step)}); err != nil {
		return fmt.Errorf("vqvae: save optimizer: %w", err)
	}
	return nil
}

// Load reads what Save wrote into a (moments and step; the
// hyper-parameters stay the caller's).
func (a *Adam) Load(r io.Reader, m *Model) error {
	st, err := model.ReadSafetensors(r)
	if err != nil {
		return fmt.Errorf("vqvae: load optimizer: %w", err)
	}
	step, err := strconv.Atoi(st.Metadata["step"])
	if err != nil || step < 0 {
		return fmt.Errorf("vqvae: load optimizer: bad step %q", st.Metadata["step"])
	}
	for _, w := range a.moments(m) {
		if err := readTensor(st, w); err != nil {
			return fmt.Errorf("vqvae: load optimizer: %w", err)
		}
	}
	if n := 2 * len(m.Params); len(st.Tensors) != n {
		return fmt.Errorf("vqvae: load optimizer: %d tensors, want %d", len(st.Tensors), n)
	}
	a.Step = step
	return nil
}
