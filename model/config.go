package model

import (
	"fmt"
	"math"
	"sort"
)

// Config is the shape of an iGPT model.
type Config struct {
	Layers int `json:"layers"` // L: transformer blocks
	D      int `json:"d"`      // d: width (n_embd)
	Heads  int `json:"heads"`  // H: attention heads of d/H
	Seq    int `json:"seq"`    // T: context length (n_positions)
	Vocab  int `json:"vocab"`  // V: palette size; the start vector is row V of wte
}

// Presets holds the paper's sizes (iGPT-S/M/L/XL at 32×32, context 1024,
// 512-colour palette) and smaller sizes for CPU training. The paper gives
// no head count for XL; 24 heads of 128 is this package's choice.
var Presets = map[string]Config{
	"S":     {Layers: 24, D: 512, Heads: 8, Seq: 1024, Vocab: 512},   // 76M parameters
	"M":     {Layers: 36, D: 1024, Heads: 8, Seq: 1024, Vocab: 512},  // 455M
	"L":     {Layers: 48, D: 1536, Heads: 16, Seq: 1024, Vocab: 512}, // 1362M
	"XL":    {Layers: 60, D: 3072, Heads: 24, Seq: 1024, Vocab: 512}, // 6801M
	"nano":  {Layers: 4, D: 128, Heads: 4, Seq: 1024, Vocab: 512},    // 1.0M
	"micro": {Layers: 8, D: 256, Heads: 8, Seq: 1024, Vocab: 512},    // 6.8M
}

// Preset returns the named preset (see Presets).
func Preset(name string) (Config, error) {
	c, ok := Presets[name]
	if !ok {
		names := make([]string, 0, len(Presets))
		for n := range Presets {
			names = append(names, n)
		}
		sort.Strings(names)
		return Config{}, fmt.Errorf("model: unknown preset %q (have %v)", name, names)
	}
	return c, nil
}

// Validate reports whether the configuration describes a model this package
// can build.
func (c Config) Validate() error {
	switch {
	case c.Layers < 1:
		return fmt.Errorf("model: config %v: layers = %d, want >= 1", c, c.Layers)
	case c.D < 1:
		return fmt.Errorf("model: config %v: d = %d, want >= 1", c, c.D)
	case c.Heads < 1 || c.D%c.Heads != 0:
		return fmt.Errorf("model: config %v: heads = %d does not divide d = %d", c, c.Heads, c.D)
	case c.Seq < 1:
		return fmt.Errorf("model: config %v: seq = %d, want >= 1", c, c.Seq)
	case c.Vocab < 1 || c.Vocab >= math.MaxInt32:
		return fmt.Errorf("model: config %v: vocab = %d out of range", c, c.Vocab)
	}
	// Sizes are checked in float64 first: NumParams' int64 arithmetic
	// wraps for widths like 3037000500, where 12·d² passes MaxInt64.
	L, d, T, V := float64(c.Layers), float64(c.D), float64(c.Seq), float64(c.Vocab)
	if n := (V+1)*d + T*d + L*(12*d*d+2*d) + d + V*d; n > MaxParams {
		return fmt.Errorf("model: config %v: %.3g parameters, more than the %d this package builds (%d GB of float32); lower layers, d, seq or vocab", c, n, int64(MaxParams), int64(MaxParams)*4>>30)
	}
	return nil
}

// MaxParams caps a model's parameter count (16G float32 values, 64 GB per
// copy; iGPT-XL has 6.8G). It guards every allocation sized by a config
// read from a file.
const MaxParams = 1 << 34

func (c Config) String() string {
	return fmt.Sprintf("L%d d%d H%d T%d V%d", c.Layers, c.D, c.Heads, c.Seq, c.Vocab)
}

// NumParams is the number of parameters (float32 values) of the model:
// wte (V+1)·d, wpe T·d, per layer 12d² + 2d, ln_f d and the head V·d.
func (c Config) NumParams() int64 {
	L, d, T, V := int64(c.Layers), int64(c.D), int64(c.Seq), int64(c.Vocab)
	return (V+1)*d + T*d + L*(12*d*d+2*d) + d + V*d
}

// MatmulParams is the weight count of the matrix multiplications per token,
// N = L·12d² + dV, the figure FLOP counts are based on (see FLOPsPerToken).
func (c Config) MatmulParams() int64 {
	d := int64(c.D)
	return int64(c.Layers)*12*d*d + d*int64(c.Vocab)
}

// FLOPsPerToken returns the FLOPs per token of a forward pass and of a
// training step at sequence length T, counted as
// ../shared/bench/torch_train_step.py counts them: dense attention (the
// causal half is not subtracted), fwd = 2N + 4·L·T·d, train = 3·fwd; norms,
// softmax, GELU, embeddings and the optimizer are not counted.
func (c Config) FLOPsPerToken(T int) (fwd, train float64) {
	fwd = 2*float64(c.MatmulParams()) + 4*float64(c.Layers)*float64(T)*float64(c.D)
	return fwd, 3 * fwd
}
