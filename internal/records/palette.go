package records

import (
	"bytes"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// Palette is the colour palette the palette stage learns and the quantize
// stage applies: K centres in 0–255 RGB, one token per centre.
type Palette struct {
	Format     string       `msgpack:"format"` // "igpt-palette"
	K          int          `msgpack:"k"`
	Centres    [][3]float32 `msgpack:"centres"`    // [K] RGB in [0, 255]
	Sizes      []float64    `msgpack:"sizes"`      // [K] pixels nearest to each centre
	Inertia    []float64    `msgpack:"inertia"`    // sum of squared errors at the start of each Lloyd iteration
	MSE        float64      `msgpack:"mse"`        // final mean squared error per pixel (sum over R, G, B)
	Pixels     uint64       `msgpack:"pixels"`     // pixels counted
	Distinct   int          `msgpack:"distinct"`   // distinct colours among them
	Seed       uint64       `msgpack:"seed"`       // k-means++ seed
	Iterations int          `msgpack:"iterations"` // Lloyd iterations run
	Converged  bool         `msgpack:"converged"`
}

// PaletteFormat marks palette files.
const PaletteFormat = "igpt-palette"

// EncodePalette serialises p with msgpack after checking it.
func EncodePalette(p *Palette) ([]byte, error) {
	p.Format = PaletteFormat
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return msgpack.Marshal(p)
}

// DecodePalette parses and checks a palette; name is used in errors.
func DecodePalette(data []byte, name string) (*Palette, error) {
	var p Palette
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("records: palette %s: not a palette file (%v); rerun the palette stage", name, err)
	}
	if p.Format != PaletteFormat {
		return nil, fmt.Errorf("records: palette %s: format %q, want %q; rerun the palette stage", name, p.Format, PaletteFormat)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("records: palette %s: %w; rerun the palette stage", name, err)
	}
	return &p, nil
}

// Validate checks that the palette is usable.
func (p *Palette) Validate() error {
	if p.K <= 0 || p.K > 1<<16 {
		return fmt.Errorf("k = %d is outside 1..65536", p.K)
	}
	if len(p.Centres) != p.K {
		return fmt.Errorf("%d centres for k = %d", len(p.Centres), p.K)
	}
	for i, c := range p.Centres {
		for _, v := range c {
			if math.IsNaN(float64(v)) || v < 0 || v > 255 {
				return fmt.Errorf("centre %d = %v is outside [0, 255]", i, c)
			}
		}
	}
	return nil
}

// Colour returns the 8-bit RGB of token t (its centre, rounded).
func (p *Palette) Colour(t uint16) [3]uint8 {
	c := p.Centres[t]
	return [3]uint8{uint8(math.Round(float64(c[0]))), uint8(math.Round(float64(c[1]))), uint8(math.Round(float64(c[2])))}
}
