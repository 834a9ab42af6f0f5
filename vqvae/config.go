package vqvae

import (
	"fmt"
	"math/bits"
)

// Config is the architecture and the codebook's update rule.
type Config struct {
	Hidden    int     // channels of the encoder and decoder (128)
	ResHidden int     // channels inside a residual block (32)
	ResBlocks int     // residual blocks R in the encoder and the decoder (2)
	K         int     // codebook size (512; ≤ 65535, codes are uint16 tokens)
	D         int     // code dimension (64)
	Factor    int     // downsampling factor f: 2, 4 or 8 (4)
	Beta      float64 // commitment cost β (0.25)
	Decay     float64 // EMA decay of the codebook (0.99)
	Epsilon   float64 // Laplace smoothing of the EMA counts (1e-5)
	DeadAfter int     // restart a code unused for this many updates (0: never)
}

// DefaultConfig returns Sonnet's example's settings with f = 4.
func DefaultConfig() Config {
	return Config{Hidden: 128, ResHidden: 32, ResBlocks: 2, K: 512, D: 64, Factor: 4,
		Beta: 0.25, Decay: 0.99, Epsilon: 1e-5, DeadAfter: 100}
}

// Levels is log2(Factor), the number of stride-2 convolutions.
func (c Config) Levels() int { return bits.TrailingZeros(uint(c.Factor)) }

// Validate checks the configuration; errors name the field in lower case
// as the YAML section vqvae: spells it.
func (c Config) Validate() error {
	switch {
	case c.Hidden < 2 || c.Hidden%2 != 0:
		return fmt.Errorf("vqvae: hidden = %d, want an even number ≥ 2", c.Hidden)
	case c.ResHidden < 1:
		return fmt.Errorf("vqvae: res_hidden = %d, want ≥ 1", c.ResHidden)
	case c.ResBlocks < 0:
		return fmt.Errorf("vqvae: res_blocks = %d, want ≥ 0", c.ResBlocks)
	case c.K < 1 || c.K > 65535:
		return fmt.Errorf("vqvae: codes = %d, want 1..65535 (codes are uint16 tokens)", c.K)
	case c.D < 1:
		return fmt.Errorf("vqvae: code_dim = %d, want ≥ 1", c.D)
	case c.Factor < 2 || c.Factor&(c.Factor-1) != 0 || c.Factor > 64:
		return fmt.Errorf("vqvae: factor = %d, want a power of two from 2 to 64", c.Factor)
	case !(c.Beta >= 0):
		return fmt.Errorf("vqvae: beta = %g, want ≥ 0", c.Beta)
	case !(c.Decay > 0 && c.Decay < 1):
		return fmt.Errorf("vqvae: decay = %g, want in (0, 1)", c.Decay)
	case !(c.Epsilon > 0):
		return fmt.Errorf("vqvae: epsilon = %g, want > 0", c.Epsilon)
	case c.DeadAfter < 0:
		return fmt.Errorf("vqvae: dead_after = %d, want ≥ 0", c.DeadAfter)
	}
	return nil
}

// CheckImage checks that an h×w image can be encoded: f must divide both.
func (c Config) CheckImage(h, w int) error {
	if h < c.Factor || w < c.Factor || h%c.Factor != 0 || w%c.Factor != 0 {
		return fmt.Errorf("vqvae: factor = %d does not divide the %d×%d images", c.Factor, h, w)
	}
	return nil
}

// MaxWeights caps the float32 values a loaded model may hold (its
// parameters, codebook and EMA state): 2^29, 2 GiB (4 GiB with the
// gradients New allocates beside them), far above any VQ-VAE igpt trains.
const MaxWeights = 1 << 29

// Weights is the number of float32 values of a model of this
// configuration (every Param, the codebook [K,D] and its EMA state [K] and
// [K,D]), computed without allocating: Load checks it against the file
// and MaxWeights before New allocates. It is a float64 so that hostile
// sizes do not overflow; model_test checks it against New.
func (c Config) Weights() float64 {
	h, rh, d := float64(c.Hidden), float64(c.ResHidden), float64(c.D)
	conv := func(k, cin, cout float64) float64 { return k*k*cin*cout + cout }
	n := conv(3, h, h) + conv(1, h, d) + conv(3, d, h) // encoder.conv, pre_vq, decoder.conv
	n += 2 * float64(max(c.ResBlocks, 0)) * (conv(3, h, rh) + conv(1, rh, h))
	cin := 3.0 // encoder.down.i
	for i, L := 0, c.Levels(); i < L; i++ {
		cout := h / 2
		if i == L-1 {
			cout = h
		}
		n += conv(4, cin, cout)
		cin = cout
	}
	cin = h // decoder.up.i
	for i, L := 0, c.Levels(); i < L; i++ {
		cout := h / 2
		if i == L-1 {
			cout = 3
		}
		n += conv(4, cin, cout)
		cin = cout
	}
	k := float64(c.K)
	return n + 2*k*d + k
}
