package vqvae

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/igpt/igpt/internal/kernels"
)

// Stats are the losses and code usage of one forward pass.
type Stats struct {
	Loss       float64 // Recon + Commit: what the gradients are of
	Recon      float64 // MSE / data variance
	MSE        float64 // mean((x̂ − x)²) over pixels and channels, in input units
	Commit     float64 // β·mean((z_e − sg(z_q))²)
	Perplexity float64 // exp(entropy) of the batch's code histogram
	Used       int     // distinct codes chosen in the batch
}

// graphFor returns the graph of n images of h×w after checking the sizes.
func (m *Model) graphFor(n, h, w int) (*graph, error) {
	if n < 1 {
		return nil, fmt.Errorf("vqvae: %d images", n)
	}
	if err := m.Cfg.CheckImage(h, w); err != nil {
		return nil, err
	}
	return m.build(n, h, w, false), nil
}

// encode runs the encoder and picks the codes of x [N,h,w,3] (z_q filled).
func (m *Model) encode(g *graph, x []float32) {
	copy(g.acts[g.x], x)
	g.run(g.enc)
	m.quantize(g)
}

// quantize picks for each row of z_e [M, D] the nearest code:
// argmin_k ‖e_k‖² − 2 z·e_k (‖z‖² is the same for every k), from one GEMM
// dots[M, K] = z_e · codebookᵀ; ties go to the lowest k. z_q = e[code].
func (m *Model) quantize(g *graph) {
	K, D := m.Cfg.K, m.Cfg.D
	ze, zq := g.acts[g.ze], g.acts[g.zq]
	M := len(ze) / D
	kernels.MatMulNT(g.dots, ze, m.Codebook, M, K, D, false)
	for k := 0; k < K; k++ {
		var s float32
		for _, v := range m.Codebook[k*D : k*D+D] {
			s += v * v
		}
		g.enorm[k] = s
	}
	for i := 0; i < M; i++ {
		row := g.dots[i*K : i*K+K]
		best, bd := 0, float32(math.Inf(1))
		for k, d := range row {
			if v := g.enorm[k] - 2*d; v < bd {
				best, bd = k, v
			}
		}
		g.codes[i] = int32(best)
		copy(zq[i*D:i*D+D], m.Codebook[best*D:best*D+D])
	}
}

// Forward runs the model on x [n,h,w,3] and returns the losses against x
// (dataVar is the variance of the training pixels, in the same units). It
// keeps the activations for Backward and UpdateCodebook.
func (m *Model) Forward(x []float32, n, h, w int, dataVar float64) (Stats, error) {
	g, err := m.graphFor(n, h, w)
	if err != nil {
		return Stats{}, err
	}
	if len(x) < n*h*w*3 {
		return Stats{}, fmt.Errorf("vqvae: %d floats for %d images of %d×%d×3", len(x), n, h, w)
	}
	m.encode(g, x)
	g.run(g.dec)
	m.last = g
	return m.stats(g, dataVar), nil
}

func (m *Model) stats(g *graph, dataVar float64) Stats {
	var s Stats
	var se float64
	x, y := g.acts[g.x], g.acts[g.y]
	for i, v := range y {
		d := float64(v) - float64(x[i])
		se += d * d
	}
	s.MSE = se / float64(len(y))
	s.Recon = s.MSE / dataVar
	var ce float64
	ze, zq := g.acts[g.ze], g.acts[g.zq]
	for i, v := range ze {
		d := float64(v) - float64(zq[i])
		ce += d * d
	}
	s.Commit = m.Cfg.Beta * ce / float64(len(ze))
	s.Loss = s.Recon + s.Commit
	clear(g.count)
	for _, c := range g.codes {
		g.count[c]++
	}
	var ent float64
	M := float64(len(g.codes))
	for _, c := range g.count {
		if c > 0 {
			p := float64(c) / M
			ent -= p * math.Log(p)
			s.Used++
		}
	}
	s.Perplexity = math.Exp(ent)
	return s
}

// Backward computes the gradients of the last Forward's loss into every
// Param.G (overwritten): reconstruction through the decoder, straight
// through the quantizer, plus the commitment term on z_e.
func (m *Model) Backward(dataVar float64) {
	g := m.last
	for _, p := range m.Params {
		clear(p.G)
	}
	clear(g.written)
	// dL/dŷ = 2(ŷ − x)/(numel·var)
	x, y, dy := g.acts[g.x], g.acts[g.y], g.grads[g.y]
	k := float32(2 / (float64(len(y)) * dataVar))
	for i, v := range y {
		dy[i] = k * (v - x[i])
	}
	g.written[g.y] = true
	g.back(g.dec)
	// straight-through: dz_e = dz_q + 2β(z_e − z_q)/numel
	ze, zq, dze, dzq := g.acts[g.ze], g.acts[g.zq], g.grads[g.ze], g.grads[g.zq]
	kc := float32(2 * m.Cfg.Beta / float64(len(ze)))
	for i, v := range ze {
		dze[i] = dzq[i] + kc*(v-zq[i])
	}
	g.written[g.ze] = true
	g.back(g.enc)
}

// UpdateCodebook moves the codebook by one EMA step towards the means of
// the encoder outputs assigned to each code in the last Forward, then
// restarts codes unused for Cfg.DeadAfter updates on random encoder outputs
// of that batch. It returns the number of codes restarted.
func (m *Model) UpdateCodebook() int {
	g := m.last
	K, D := m.Cfg.K, m.Cfg.D
	ze := g.acts[g.ze]
	clear(g.sums)
	clear(g.count)
	for i, c := range g.codes {
		g.count[c]++
		s := g.sums[int(c)*D : int(c)*D+D]
		for j, v := range ze[i*D : i*D+D] {
			s[j] += v
		}
	}
	m.Updates++
	a := 1 - m.Cfg.Decay
	bc := 1 - math.Pow(m.Cfg.Decay, float64(m.Updates)) // debiasing
	var n float64
	for k := 0; k < K; k++ {
		m.EMACount[k] -= float32(float64(m.EMACount[k]-g.count[k]) * a)
		n += float64(m.EMACount[k]) / bc
	}
	for i, s := range g.sums {
		m.EMASum[i] -= float32(float64(m.EMASum[i]-s) * a)
	}
	eps := m.Cfg.Epsilon
	for k := 0; k < K; k++ {
		cs := (float64(m.EMACount[k])/bc + eps) / (n + float64(K)*eps) * n
		for j := 0; j < D; j++ {
			m.Codebook[k*D+j] = float32(float64(m.EMASum[k*D+j]) / bc / cs)
		}
		if g.count[k] > 0 {
			m.Unused[k] = 0
		} else {
			m.Unused[k]++
		}
	}
	if m.Cfg.DeadAfter == 0 {
		return 0
	}
	// restart: the code becomes an encoder output with a debiased count of 1
	r := rand.New(rand.NewPCG(uint64(m.Updates), 0x72657374617274))
	M := len(g.codes)
	restarted := 0
	for k := 0; k < K; k++ {
		if int(m.Unused[k]) < m.Cfg.DeadAfter {
			continue
		}
		src := ze[r.IntN(M)*D:][:D]
		copy(m.Codebook[k*D:k*D+D], src)
		for j, v := range src {
			m.EMASum[k*D+j] = float32(float64(v) * bc)
		}
		m.EMACount[k] = float32(bc)
		m.Unused[k] = 0
		restarted++
	}
	return restarted
}

// Encode writes the codes of n images x [n,h,w,3] to dst [n, h/f, w/f]
// (raster order per image).
func (m *Model) Encode(dst []uint16, x []float32, n, h, w int) error {
	g, err := m.graphFor(n, h, w)
	if err != nil {
		return err
	}
	if len(x) < n*h*w*3 || len(dst) < len(g.codes) {
		return fmt.Errorf("vqvae: encode: %d floats in, %d codes out for %d images of %d×%d", len(x), len(dst), n, h, w)
	}
	m.encode(g, x)
	for i, c := range g.codes {
		dst[i] = uint16(c)
	}
	return nil
}

// Decode writes the images [n, hq·f, wq·f, 3] of the code grids codes
// [n, hq, wq] to dst.
func (m *Model) Decode(dst []float32, codes []uint16, n, hq, wq int) error {
	f := m.Cfg.Factor
	g, err := m.graphFor(n, hq*f, wq*f)
	if err != nil {
		return err
	}
	D := m.Cfg.D
	zq := g.acts[g.zq]
	if len(codes) < n*hq*wq || len(dst) < len(g.acts[g.y]) {
		return fmt.Errorf("vqvae: decode: %d codes in, %d floats out for %d grids of %d×%d", len(codes), len(dst), n, hq, wq)
	}
	for i, c := range codes[:n*hq*wq] {
		if int(c) >= m.Cfg.K {
			return fmt.Errorf("vqvae: decode: code %d at %d ≥ codes = %d", c, i, m.Cfg.K)
		}
		copy(zq[i*D:i*D+D], m.Codebook[int(c)*D:int(c)*D+D])
	}
	g.run(g.dec)
	copy(dst, g.acts[g.y])
	return nil
}

// Reconstruct writes decode(encode(x)) [n,h,w,3] to dst.
func (m *Model) Reconstruct(dst, x []float32, n, h, w int) error {
	if _, err := m.Forward(x, n, h, w, 1); err != nil {
		return err
	}
	if len(dst) < n*h*w*3 {
		return fmt.Errorf("vqvae: reconstruct: %d floats out for %d images of %d×%d×3", len(dst), n, h, w)
	}
	copy(dst, m.last.acts[m.last.y])
	return nil
}
