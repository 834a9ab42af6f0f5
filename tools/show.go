package tools

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/pipelines"
	"github.com/igpt/igpt/stages"
)

// ShowTokens draws the first n records of a Tokens shard (or of a quantize
// or vqvae-encode stage folder's first shard) as a PNG grid: each original
// image from the download stage, resized to the tokens' pixels as the
// stage's resize did, beside its tokens decoded by the palette or the
// VQ-VAE, scaled ×scale.
func ShowTokens(ctx context.Context, path string, n, scale int) ([]byte, error) {
	if err := stages.CheckScale(scale); err != nil {
		return nil, fmt.Errorf("show: %w", err)
	}
	qm, shard, err := tokensShard(ctx, path)
	if err != nil {
		return nil, err
	}
	codec, err := stages.OpenCodec(ctx, qm)
	if err != nil {
		return nil, fmt.Errorf("show: %w", err)
	}
	dl, err := qm.Upstream(ctx, "download")
	if err != nil {
		return nil, fmt.Errorf("show: %s is not a token stage's output: %w", qm.Dir, err)
	}
	toks, err := readTokens(ctx, shard, n)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("show: %s: no records to draw", shard)
	}
	if err := stages.CheckGrid(toks, toks[0].H, toks[0].W, codec.Vocab()); err != nil {
		return nil, fmt.Errorf("show: %s: %w", shard, err)
	}
	originals, err := findImages(ctx, dl, toks)
	if err != nil {
		return nil, err
	}
	return tokenGrid(toks, originals, codec, scale)
}

// tokensShard resolves path, a Tokens shard or a quantize stage folder,
// to its stage's manifest and the shard to draw.
func tokensShard(ctx context.Context, path string) (*stages.Manifest, string, error) {
	if !strings.HasSuffix(path, ".msgpack") {
		m, err := stages.ReadManifest(ctx, strings.TrimSuffix(path, "/"))
		if err != nil {
			return nil, "", fmt.Errorf("show: %s is neither a Tokens shard nor a stage folder: %w", path, err)
		}
		if len(m.Files) == 0 {
			return nil, "", fmt.Errorf("show: %s has no shards", path)
		}
		return m, m.Path(m.Files[0].Name), nil
	}
	if _, err := storage.StatUserFile(ctx, path, 0); err != nil {
		return nil, "", fmt.Errorf("show: %w", err)
	}
	qm, err := stages.ReadManifest(ctx, storage.Dir(path))
	if err != nil {
		return nil, "", fmt.Errorf("show: %s: the shard's stage folder has no manifest: %w", path, err)
	}
	return qm, path, nil
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
func findImages(ctx context.Context, dl *stages.Manifest, toks []records.Tokens) (map[string]records.Image, error) {
	want := map[string]bool{}
	for _, t := range toks {
		want[t.Key] = true
	}
	found := map[string]records.Image{}
	for _, f := range dl.Files {
		if f.Split == "" || len(found) == len(want) {
			continue
		}
		err := records.ScanFileWhere(ctx, dl.Path(f.Name), func(key string) bool { return want[key] }, func(img records.Image) error {
			found[img.Key] = img
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return found, nil
}

// tokenGrid lays out pairs (original | decoded), 8 pairs per row. An
// original of another size than the token grid (quantize.resize) is
// resized to it with the same area filter quantize uses; one not found is
// left white.
func tokenGrid(toks []records.Tokens, originals map[string]records.Image, codec stages.Codec, scale int) ([]byte, error) {
	const perRow = 8
	f := codec.Factor()
	th, tw := toks[0].H, toks[0].W
	h, w := th*f, tw*f // the tokens' pixels
	var rows [][]imgproc.Tile
	for i, t := range toks {
		if i%perRow == 0 {
			rows = append(rows, nil)
		}
		var orig []byte
		if o, ok := originals[t.Key]; ok {
			var err error
			if orig, err = originalRGB(o, h, w); err != nil {
				return nil, fmt.Errorf("show: original %q: %w", t.Key, err)
			}
		}
		dec, err := codec.Decode(t.Tok, th, tw)
		if err != nil {
			return nil, fmt.Errorf("show: decode %q: %w", t.Key, err)
		}
		pair := imgproc.SideBySide(orig, dec, h, w)
		rows[len(rows)-1] = append(rows[len(rows)-1], imgproc.Tile{RGB: pair})
	}
	for len(rows[0]) < perRow { // the canvas is perRow pairs wide
		rows[0] = append(rows[0], imgproc.Tile{Blank: true})
	}
	return imgproc.Grid{TileH: h, TileW: 2 * w, Scale: scale, Gap: 4}.PNG(rows)
}

// originalRGB returns an original image as h×w RGB pixels.
func originalRGB(o records.Image, h, w int) ([]byte, error) {
	pix := o.Pix
	if len(pix) != o.H*o.W*o.C {
		return nil, fmt.Errorf("%d bytes for %d×%d×%d pixels", len(pix), o.H, o.W, o.C)
	}
	if o.H != h || o.W != w {
		var err error
		if pix, err = imgproc.Resize(o.Pix, o.H, o.W, o.C, h, w); err != nil {
			return nil, err
		}
	}
	return imgproc.ToRGB(pix, o.C)
}
