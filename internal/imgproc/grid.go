package imgproc

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
)

// Tile is one picture of a Grid: RGB pixels, row-major, of the grid's tile
// size. Pixels past the end of a short RGB are drawn grey (an occluded
// image's missing rows); a Blank tile draws nothing.
type Tile struct {
	RGB   []byte
	Blank bool
}

// Grid lays tiles of TileH×TileW pixels out in rows on a white canvas,
// each pixel drawn as a Scale×Scale block and each tile followed by Gap
// white pixels. With Sep, a wider gap (2·Gap more) follows a row's first
// tile and precedes its last, setting an input and a reference apart. It is
// igpt's one PNG grid drawer: palette swatches, sample and completion grids
// and `igpt show tokens` all use it.
type Grid struct {
	TileH, TileW int
	Scale, Gap   int
	Sep          bool
	// Transparent leaves the canvas's background transparent, not white.
	Transparent bool
}

// Grey is the colour of pixels a short tile lacks.
var Grey = color.RGBA{128, 128, 128, 255}

// PNG draws rows of tiles and encodes the canvas as PNG. The canvas is as
// wide as the longest row.
func (g Grid) PNG(rows [][]Tile) ([]byte, error) {
	if g.TileH < 1 || g.TileW < 1 || g.Scale < 1 || g.Gap < 0 {
		return nil, fmt.Errorf("imgproc: grid of %d×%d tiles at scale %d, gap %d: sizes must be positive", g.TileH, g.TileW, g.Scale, g.Gap)
	}
	cols := 0
	for _, r := range rows {
		cols = max(cols, len(r))
	}
	cw, ch := g.TileW*g.Scale+g.Gap, g.TileH*g.Scale+g.Gap
	extra := 0
	if g.Sep {
		extra = 4 * g.Gap
	}
	img := image.NewRGBA(image.Rect(0, 0, cols*cw+extra, len(rows)*ch))
	if !g.Transparent {
		for i := range img.Pix {
			img.Pix[i] = 255
		}
	}
	for r, row := range rows {
		for c, t := range row {
			x0 := c * cw
			if g.Sep && c > 0 {
				x0 += 2 * g.Gap
			}
			if g.Sep && c == len(row)-1 {
				x0 += 2 * g.Gap
			}
			if !t.Blank {
				g.draw(img, t.RGB, x0, r*ch)
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("imgproc: encode grid: %w", err)
	}
	return buf.Bytes(), nil
}

// draw paints one tile with its top-left corner at (x0, y0).
func (g Grid) draw(img *image.RGBA, rgb []byte, x0, y0 int) {
	s := g.Scale
	for y := 0; y < g.TileH; y++ {
		for x := 0; x < g.TileW; x++ {
			c := Grey
			if i := (y*g.TileW + x) * 3; i+3 <= len(rgb) {
				c = color.RGBA{rgb[i], rgb[i+1], rgb[i+2], 255}
			}
			for yy := y0 + y*s; yy < y0+(y+1)*s; yy++ {
				for xx := x0 + x*s; xx < x0+(x+1)*s; xx++ {
					img.SetRGBA(xx, yy, c)
				}
			}
		}
	}
}

// SideBySide joins two h×w RGB pictures into one h×2w picture, left|right;
// a nil left is drawn white.
func SideBySide(left, right []byte, h, w int) []byte {
	out := make([]byte, 0, h*2*w*3)
	for y := 0; y < h; y++ {
		if left == nil {
			out = append(out, bytes.Repeat([]byte{255}, w*3)...)
		} else {
			out = append(out, left[y*w*3:(y+1)*w*3]...)
		}
		out = append(out, right[y*w*3:(y+1)*w*3]...)
	}
	return out
}
