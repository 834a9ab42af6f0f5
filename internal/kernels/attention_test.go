package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// refAttention is the unfused float64 computation: it materialises the
// T×T probabilities of each head. It returns out [B,T,C] and, given dout,
// dqkv [B,T,3C].
func refAttention(qkv, dout []float32, B, T, C, H int, causal bool) (out, dqkv []float64) {
	hd := C / H
	scale := 1 / math.Sqrt(float64(hd))
	out = make([]float64, B*T*C)
	dqkv = make([]float64, B*T*3*C)
	at := func(b, t, part, h, i int) int { return (b*T+t)*3*C + part*C + h*hd + i }
	P := make([]float64, T*T)
	dP := make([]float64, T*T)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for t := 0; t < T; t++ {
				mx := math.Inf(-1)
				for s := 0; s < T; s++ {
					if causal && s > t {
						P[t*T+s] = math.Inf(-1)
						continue
					}
					var d float64
					for i := 0; i < hd; i++ {
						d += float64(qkv[at(b, t, 0, h, i)]) * float64(qkv[at(b, s, 1, h, i)])
					}
					P[t*T+s] = d * scale
					mx = math.Max(mx, d*scale)
				}
				var sum float64
				for s := 0; s < T; s++ {
					P[t*T+s] = math.Exp(P[t*T+s] - mx)
					sum += P[t*T+s]
				}
				for s := 0; s < T; s++ {
					P[t*T+s] /= sum
					for i := 0; i < hd; i++ {
						out[(b*T+t)*C+h*hd+i] += P[t*T+s] * float64(qkv[at(b, s, 2, h, i)])
					}
				}
			}
			if dout == nil {
				continue
			}
			// dV = Pᵀ dO; dP = dO Vᵀ; dS = P∘(dP − rowsum(P∘dP)); dQ = scale dS K; dK = scale dSᵀ Q
			for t := 0; t < T; t++ {
				var rs float64
				for s := 0; s < T; s++ {
					var d float64
					for i := 0; i < hd; i++ {
						d += float64(dout[(b*T+t)*C+h*hd+i]) * float64(qkv[at(b, s, 2, h, i)])
						dqkv[at(b, s, 2, h, i)] += P[t*T+s] * float64(dout[(b*T+t)*C+h*hd+i])
					}
					dP[t*T+s] = d
					rs += P[t*T+s] * d
				}
				for s := 0; s < T; s++ {
					ds := P[t*T+s] * (dP[t*T+s] - rs) * scale
					for i := 0; i < hd; i++ {
						dqkv[at(b, t, 0, h, i)] += ds * float64(qkv[at(b, s, 1, h, i)])
						dqkv[at(b, s, 1, h, i)] += ds * float64(qkv[at(b, t, 0, h, i)])
					}
				}
			}
		}
	}
	return out, dqkv
}

func TestAttention(t *testing.T) {
	type tc struct{ B, T, C, H int }
	cases := []tc{{1, 1, 8, 2}, {2, 3, 12, 3}, {1, 7, 16, 2}, {2, 17, 64, 1}, {1, 65, 32, 2}, {1, 257, 128, 2}, {1, 200, 20, 4}}
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewSource(5))
		for _, c := range cases {
			for _, causal := range []bool{true, false} {
				qkv := randSlice(r, c.B*c.T*3*c.C, 1.5)
				dout := randSlice(r, c.B*c.T*c.C, 1)
				out := make([]float32, c.B*c.T*c.C)
				lse := make([]float32, c.B*c.H*c.T)
				dqkv := make([]float32, len(qkv))
				for i := range dqkv {
					dqkv[i] = float32(math.NaN()) // must be overwritten
				}
				AttentionForward(out, lse, qkv, c.B, c.T, c.C, c.H, causal)
				AttentionBackward(dqkv, dout, out, lse, qkv, c.B, c.T, c.C, c.H, causal)
				wo, wd := refAttention(qkv, dout, c.B, c.T, c.C, c.H, causal)
				if e := relErr(out, wo); !(e <= 1e-5) {
					t.Errorf("%+v causal=%v: forward rel err %g", c, causal, e)
				}
				if e := relErr(dqkv, wd); !(e <= 1e-5) {
					t.Errorf("%+v causal=%v: backward rel err %g", c, causal, e)
				}
			}
		}
	})
}
