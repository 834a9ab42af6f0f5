package model

import (
	"math"
	"math/rand/v2"
)

// naive is an independent float64 implementation of the model with
// explicit loops (no kernels), used to check the float32 path and as the
// function whose finite differences check the gradients.
type naive struct {
	cfg    Config
	data   []float64
	wte    []float64
	wpe    []float64
	layers []naiveLayer
	lnf    []float64
	head   []float64
}

type naiveLayer struct{ ln1, cattn, proj, ln2, fc, mproj []float64 }

func newNaive(p *Params) *naive {
	n := &naive{cfg: p.Config, data: make([]float64, len(p.Data))}
	for i, v := range p.Data {
		n.data[i] = float64(v)
	}
	var views [][]float64
	off := 0
	for _, t := range p.Tensors() {
		views = append(views, n.data[off:off+len(t.Data)])
		off += len(t.Data)
	}
	n.wte, n.wpe = views[0], views[1]
	for l := 0; l < p.Config.Layers; l++ {
		v := views[2+6*l:]
		n.layers = append(n.layers, naiveLayer{v[0], v[1], v[2], v[3], v[4], v[5]})
	}
	n.lnf, n.head = views[len(views)-2], views[len(views)-1]
	return n
}

func naiveRMS(x, g []float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+1e-5)
	out := make([]float64, len(x))
	for i, v := range x {
		gi := 1.0
		if g != nil {
			gi = g[i]
		}
		out[i] = v * r * gi
	}
	return out
}

// vecMat returns x[K] · w[K,N] (row-major).
func vecMat(x, w []float64, N int) []float64 {
	out := make([]float64, N)
	for k, xv := range x {
		row := w[k*N : (k+1)*N]
		for j, wv := range row {
			out[j] += xv * wv
		}
	}
	return out
}

// forward returns the loss, the logits [B,T,V] and the hidden states
// h_0 … h_L, each [B,T,C].
func (n *naive) forward(tokens []int32, mask []bool, obj Objective) (float64, []float64, [][]float64) {
	L, C, H, V := n.cfg.Layers, n.cfg.D, n.cfg.Heads, n.cfg.Vocab
	T := n.cfg.Seq
	if len(tokens) < T {
		T = len(tokens)
	}
	B := len(tokens) / T
	hidden := make([][]float64, L+1)
	for l := range hidden {
		hidden[l] = make([]float64, B*T*C)
	}
	logits := make([]float64, B*T*V)
	var lossSum float64
	var count int
	for b := 0; b < B; b++ {
		h := n.embed(tokens[b*T:(b+1)*T], mask, obj, b)
		for t := range h {
			copy(hidden[0][(b*T+t)*C:], h[t])
		}
		for l, w := range n.layers {
			qkv := make([][]float64, T)
			for t := 0; t < T; t++ {
				qkv[t] = vecMat(naiveRMS(h[t], w.ln1), w.cattn, 3*C)
			}
			for t := 0; t < T; t++ {
				last := T - 1
				if obj == AR {
					last = t
				}
				a := vecMat(naiveAttend(qkv, t, last, C, H), w.proj, C)
				for c := range a {
					h[t][c] += a[c]
				}
			}
			for t := 0; t < T; t++ {
				u := vecMat(naiveRMS(h[t], w.ln2), w.fc, 4*C)
				for i, v := range u {
					u[i] = v / (1 + math.Exp(-1.702*v))
				}
				m := vecMat(u, w.mproj, C)
				for c := range m {
					h[t][c] += m[c]
				}
				copy(hidden[l+1][(b*T+t)*C:], h[t])
			}
		}
		for t := 0; t < T; t++ {
			x := naiveRMS(h[t], n.lnf)
			lg := logits[(b*T+t)*V : (b*T+t+1)*V]
			mx := math.Inf(-1)
			for v := 0; v < V; v++ {
				for c := 0; c < C; c++ {
					lg[v] += x[c] * n.head[v*C+c]
				}
				mx = math.Max(mx, lg[v])
			}
			if obj == BERT && !mask[b*T+t] {
				continue
			}
			var z float64
			for _, v := range lg {
				z += math.Exp(v - mx)
			}
			lossSum += mx + math.Log(z) - lg[tokens[b*T+t]]
			count++
		}
	}
	if count == 0 {
		return 0, logits, hidden
	}
	return lossSum / float64(count), logits, hidden
}

// embed is the input of sequence b (tokens [T]): the token embedding of
// the previous token (AR, the start vector at 0) or of the token itself
// unless masked (BERT), plus the position embedding.
func (n *naive) embed(tokens []int32, mask []bool, obj Objective, b int) [][]float64 {
	C, V, T := n.cfg.D, n.cfg.Vocab, len(tokens)
	h := make([][]float64, T)
	for t := 0; t < T; t++ {
		h[t] = make([]float64, C)
		var id int = -1
		if obj == AR {
			if t == 0 {
				id = V
			} else {
				id = int(tokens[t-1])
			}
		} else if !mask[b*T+t] {
			id = int(tokens[t])
		}
		for c := 0; c < C; c++ {
			if id >= 0 {
				h[t][c] = n.wte[id*C+c]
			}
			h[t][c] += n.wpe[t*C+c]
		}
	}
	return h
}

// naiveAttend is position t's attention output over positions 0..last
// (qkv [T][3C]), heads concatenated.
func naiveAttend(qkv [][]float64, t, last, C, H int) []float64 {
	hd := C / H
	y := make([]float64, C)
	for hh := 0; hh < H; hh++ {
		s := make([]float64, last+1)
		mx := math.Inf(-1)
		for u := 0; u <= last; u++ {
			for i := 0; i < hd; i++ {
				s[u] += qkv[t][hh*hd+i] * qkv[u][C+hh*hd+i]
			}
			s[u] /= math.Sqrt(float64(hd))
			mx = math.Max(mx, s[u])
		}
		var z float64
		for u := range s {
			s[u] = math.Exp(s[u] - mx)
			z += s[u]
		}
		for u := range s {
			for i := 0; i < hd; i++ {
				y[hh*hd+i] += s[u] / z * qkv[u][2*C+hh*hd+i]
			}
		}
	}
	return y
}

// naiveProbe is the mean over positions of norm(h) with gain 1: [B, C].
func naiveProbe(h []float64, B, T, C int) []float64 {
	out := make([]float64, B*C)
	for b := 0; b < B; b++ {
		for t := 0; t < T; t++ {
			x := naiveRMS(h[(b*T+t)*C:(b*T+t+1)*C], nil)
			for c, v := range x {
				out[b*C+c] += v / float64(T)
			}
		}
	}
	return out
}

// randomParams fills p with a "trained-ish" random model: matrices
// N(0, std²), gains 1 + N(0, 0.1²), a non-zero head.
func randomParams(p *Params, seed uint64, std float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, t := range p.Tensors() {
		for i := range t.Data {
			if IsGain(t.Name) {
				t.Data[i] = float32(1 + 0.1*rng.NormFloat64())
			} else {
				t.Data[i] = float32(std * rng.NormFloat64())
			}
		}
	}
	for i := range p.LMHead {
		p.LMHead[i] *= 5
	}
}

func randomTokens(rng *rand.Rand, n, V int) []int32 {
	x := make([]int32, n)
	for i := range x {
		x[i] = int32(rng.IntN(V))
	}
	return x
}

// naiveProbeGrid is naiveProbe over the regions of an n×n grid of the
// gh×gw token grid: [B, n·n, C], region (i, j) the mean of norm(h) over
// the rows r with floor(r·n/gh) = i and columns c with floor(c·n/gw) = j,
// found by comparing region bounds in float64.
func naiveProbeGrid(h []float64, B, gh, gw, n, C int) []float64 {
	out := make([]float64, B*n*n*C)
	in := func(x, side, k int) bool { // is x in part k of side cut in n?
		lo, hi := float64(k)*float64(side)/float64(n), float64(k+1)*float64(side)/float64(n)
		return float64(x) >= lo && float64(x) < hi
	}
	for b := 0; b < B; b++ {
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				var sum []float64
				count := 0
				for r := 0; r < gh; r++ {
					for c := 0; c < gw; c++ {
						if !in(r, gh, i) || !in(c, gw, j) {
							continue
						}
						t := r*gw + c
						x := naiveRMS(h[(b*gh*gw+t)*C:(b*gh*gw+t+1)*C], nil)
						if sum == nil {
							sum = make([]float64, C)
						}
						for k, v := range x {
							sum[k] += v
						}
						count++
					}
				}
				for k := range sum {
					out[((b*n+i)*n+j)*C+k] = sum[k] / float64(count)
				}
			}
		}
	}
	return out
}
