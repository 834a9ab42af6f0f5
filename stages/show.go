package stages

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"strings"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/pipelines"
)

// ShowTokens draws the first n records of a Tokens shard (or of a quantize
// stage folder's first shard) as a PNG grid: each original image from the
// download stage beside its palette-decoded version, scaled ×scale.
func ShowTokens(ctx context.Context, path string, n, scale int) ([]byte, error) {
	if err := checkScale(scale); err != nil {
		return nil, fmt.Errorf("show: %w", err)
	}
	dir, shard := path, ""
	if !strings.HasSuffix(path, ".msgpack") {
		m, err := ReadManifest(ctx, strings.TrimSuffix(path, "/"))
		if err != nil {
			return nil, fmt.Errorf("show: %s is neither a Tokens shard nor a stage folder: %w", path, err)
		}
		if len(m.Files) == 0 {
			return nil, fmt.Errorf("show: %s has no shards", path)
		}
		shard = m.Path(m.Files[0].Name)
	} else {
		dir, shard = storage.Dir(path), path
	}
	qm, err := ReadManifest(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("show: %s: the shard's stage folder has no manifest: %w", path, err)
	}
	pm, err := runInput(ctx, qm, "palette")
	if err != nil {
		return nil, fmt.Errorf("show: %s is not a quantize output: %w", qm.Dir, err)
	}
	dl, err := runInput(ctx, qm, "download")
	if err != nil {
		return nil, fmt.Errorf("show: %s is not a quantize output: %w", qm.Dir, err)
	}
	pal, _, err := ReadPalette(ctx, pm)
	if err != nil {
		return nil, err
	}
	toks, err := readTokens(ctx, shard, n)
	if err != nil {
		return nil, err
	}
	if len(toks) > 0 {
		if err := checkGrid(toks, toks[0].H, toks[0].W, pal.K); err != nil {
			return nil, fmt.Errorf("show: %s: %w", shard, err)
		}
	}
	originals, err := findImages(ctx, dl, toks)
	if err != nil {
		return nil, err
	}
	return tokenGrid(toks, originals, pal, scale)
}

func readTokens(ctx context.Context, path string, n int) ([]records.Tokens, error) {
	var out []records.Tokens
	err := pipelines.ScanShard(ctx, path, func(t records.Tokens) error {
		if len(out) >= n {
			return io.EOF
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// findImages scans the download output for the originals of toks by key.
func findImages(ctx context.Context, dl *Manifest, toks []records.Tokens) (map[string]records.Image, error) {
	want := map[string]bool{}
	for _, t := range toks {
		want[t.Key] = true
	}
	found := map[string]records.Image{}
	for _, f := range dl.Files {
		if f.Split == "" || len(found) == len(want) {
			continue
		}
		err := pipelines.ScanShard(ctx, dl.Path(f.Name), func(img records.Image) error {
			if want[img.Key] {
				found[img.Key] = img
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return found, nil
}

// tokenGrid lays out pairs (original | decoded), 8 pairs per row.
func tokenGrid(toks []records.Tokens, originals map[string]records.Image, pal *records.Palette, scale int) ([]byte, error) {
	if len(toks) == 0 {
		return nil, fmt.Errorf("show: no records to draw")
	}
	const perRow, gap = 8, 4
	h, w := toks[0].H, toks[0].W
	cellW, cellH := 2*w*scale+gap, h*scale+gap
	rows := (len(toks) + perRow - 1) / perRow
	img := image.NewRGBA(image.Rect(0, 0, perRow*cellW, rows*cellH))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	for i, t := range toks {
		x0, y0 := (i%perRow)*cellW, (i/perRow)*cellH
		if o, ok := originals[t.Key]; ok && o.H == h && o.W == w {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					p := o.Pix[(y*w+x)*o.C:]
					c := color.RGBA{p[0], p[0], p[0], 255}
					if o.C == 3 {
						c = color.RGBA{p[0], p[1], p[2], 255}
					}
					fill(img, x0+x*scale, y0+y*scale, scale, c)
				}
			}
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := pal.Colour(t.Tok[y*w+x])
				fill(img, x0+w*scale+x*scale, y0+y*scale, scale, color.RGBA{c[0], c[1], c[2], 255})
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fill(img *image.RGBA, x0, y0, s int, c color.RGBA) {
	for y := y0; y < y0+s; y++ {
		for x := x0; x < x0+s; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}
