package stages

import (
	"context"
	"fmt"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/kmeans"
	"github.com/igpt/igpt/pipelines"
	"github.com/igpt/igpt/vqvae"
)

// Codec turns pictures into tokens and tokens back into pictures: the
// palette of a quantize output, or the trained VQ-VAE of a vqvae-encode
// output. Sample, completions and `igpt show tokens` draw through it.
type Codec interface {
	// Vocab is the number of distinct tokens.
	Vocab() int
	// Factor is the side in pixels of one token: 1 for the palette, the
	// VQ-VAE's downsampling factor f.
	Factor() int
	// Encode maps an RGB (or grey) image of (h·Factor)×(w·Factor) pixels
	// to its h×w token grid.
	Encode(img records.Image) (records.Tokens, error)
	// Decode returns the RGB pixels of an h×w token grid, (h·Factor) ×
	// (w·Factor) × 3 bytes. A sequence shorter than h·w (an occluded
	// picture) decodes its complete token rows; the pixels below them are
	// left out, so that the grid drawer greys them.
	Decode(toks []uint16, h, w int) ([]byte, error)
}

// paletteCodec is the palette: one colour per token.
type paletteCodec struct {
	pal *records.Palette
	lut *kmeans.LUT
}

func (c *paletteCodec) Vocab() int  { return c.pal.K }
func (c *paletteCodec) Factor() int { return 1 }

func (c *paletteCodec) Encode(img records.Image) (records.Tokens, error) {
	if c.lut == nil {
		lut, err := kmeans.NewLUT(c.pal.Centres)
		if err != nil {
			return records.Tokens{}, err
		}
		c.lut = lut
	}
	return pipelines.Tokenize(img, c.lut, c.pal.K, [2]int{})
}

func (c *paletteCodec) Decode(toks []uint16, h, w int) ([]byte, error) {
	return TokenRGB(c.pal, toks), nil
}

// vqCodec is a trained VQ-VAE: a code per f×f pixels.
type vqCodec struct{ m *vqvae.Model }

func (c *vqCodec) Vocab() int  { return c.m.Cfg.K }
func (c *vqCodec) Factor() int { return c.m.Cfg.Factor }

func (c *vqCodec) Encode(img records.Image) (records.Tokens, error) {
	enc := pipelines.NewVQEncoder(c.m, [2]int{}, 1)
	if err := enc.Add(img); err != nil {
		return records.Tokens{}, err
	}
	toks, err := enc.Flush()
	if err != nil {
		return records.Tokens{}, err
	}
	return toks[0], nil
}

// Decode decodes the complete rows of codes (a short sequence is padded
// with code 0 for the decoder, and its padded rows' pixels dropped).
func (c *vqCodec) Decode(toks []uint16, h, w int) ([]byte, error) {
	f := c.m.Cfg.Factor
	rows := min(h, len(toks)/w)
	grid := make([]uint16, h*w)
	copy(grid, toks[:rows*w])
	x := make([]float32, h*f*w*f*3)
	if err := c.m.Decode(x, grid, 1, h, w); err != nil {
		return nil, err
	}
	// A decoded code row reaches past its f pixel rows (the decoder's
	// receptive field), so an occluded picture shows only its kept rows.
	n := rows * f * w * f * 3
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(vqvae.OutputPixel(x[i]))
	}
	return out, nil
}

// OpenCodec returns the codec of a token stage's output: the palette of a
// quantize output, the VQ-VAE of a vqvae-encode output, found through its
// manifest's inputs.
func OpenCodec(ctx context.Context, tm *Manifest) (Codec, error) {
	switch tm.Stage {
	case "quantize":
		pm, err := tm.Upstream(ctx, "palette")
		if err != nil {
			return nil, err
		}
		return paletteCodecOf(ctx, pm)
	case "vqvae-encode":
		vm, err := tm.Upstream(ctx, "vqvae-train")
		if err != nil {
			return nil, err
		}
		return vqCodecOf(ctx, vm)
	}
	return nil, fmt.Errorf("%s holds a %s stage, not tokens (quantize or vqvae-encode)", tm.Dir, tm.Stage)
}

// codecOf returns the codec of a decoder stage's output (palette or
// vqvae-train).
func codecOf(ctx context.Context, dm *Manifest) (Codec, error) {
	if dm.Stage == "vqvae-train" {
		return vqCodecOf(ctx, dm)
	}
	return paletteCodecOf(ctx, dm)
}

func paletteCodecOf(ctx context.Context, pm *Manifest) (Codec, error) {
	pal, _, err := ReadPalette(ctx, pm)
	if err != nil {
		return nil, err
	}
	return &paletteCodec{pal: pal}, nil
}

func vqCodecOf(ctx context.Context, vm *Manifest) (Codec, error) {
	_, weights, err := ReadVQVAE(vm)
	if err != nil {
		return nil, err
	}
	m, err := pipelines.LoadVQVAE(ctx, weights)
	if err != nil {
		return nil, err
	}
	return &vqCodec{m: m}, nil
}

// tokensInput returns the token stage a train output read (quantize or
// vqvae-encode), from its manifest's inputs.
func tokensInput(ctx context.Context, trained *Manifest) (*Manifest, error) {
	for _, in := range trained.Inputs {
		if in.Stage == "quantize" || in.Stage == "vqvae-encode" {
			return trained.Upstream(ctx, in.Stage)
		}
	}
	return nil, fmt.Errorf("%s (a %s stage) has no token input (quantize or vqvae-encode)", trained.Dir, trained.Stage)
}
