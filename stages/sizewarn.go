package stages

import (
	"fmt"
	"image"
	_ "image/jpeg" // DecodeConfig of a folder's first image
	_ "image/png"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/igpt/igpt/internal/datasets"
)

// maxSideRatio is how many times the token grid's side an image may be
// before SizeWarning speaks: 32×32 images quantized at 16×16 (2×) are the
// quickstart's choice; 224×224 at 16×16 (14×) is an oversight.
const maxSideRatio = 4

// SizeWarning is, for palette tokens, a warning when the images the
// download stage will write are much larger than the token grid: the
// palette learns on every full-size pixel, quantize shrinks each image by
// a large factor, and the raw-pixel baseline has h·w·c dimensions. It
// suggests download.resize. The image size comes from the registry, from
// dataset.image_size, or from the header of the first image of a local
// folder source (an archive or a gs:// source is not opened); "" when the
// size is unknown or fits.
func SizeWarning(cfg *Config) string {
	if cfg.Tokens != TokensPalette || cfg.Download.Resize > 0 {
		return ""
	}
	h, w, c, from := plannedImageSize(cfg)
	if h == 0 {
		return ""
	}
	gh, gw := h, w
	if r := cfg.Quantize.Resize; len(r) == 2 {
		gh, gw = r[0], r[1]
	}
	ratio := max(h/max(gh, 1), w/max(gw, 1))
	suggest := min(2*max(gh, gw), 64)
	fix := fmt.Sprintf("set download.resize: %d (short side to %d and the centre square, in the download stage) unless that is what you want", suggest, suggest)
	switch {
	case ratio >= maxSideRatio:
		return fmt.Sprintf("images are %d×%d (%s), %d× the %d×%d token grid: the palette would learn on %d×%d pixels per image, "+
			"quantize would shrink each %d× and the raw-pixel baseline would have %d dimensions; %s",
			h, w, from, ratio, gh, gw, h, w, ratio, h*w*c, fix)
	case gh*gw > 64*64:
		return fmt.Sprintf("images are %d×%d (%s) and quantize.resize is not set: each image would be %d tokens of context "+
			"and the raw-pixel baseline would have %d dimensions; %s, or set quantize.resize",
			h, w, from, gh*gw, h*w*c, fix)
	}
	return ""
}

// plannedImageSize is the size of the images the download stage will
// write, and where it was learned; zeros when unknown.
func plannedImageSize(cfg *Config) (h, w, c int, from string) {
	d := cfg.Dataset
	c = 3
	if d.Channels == 1 {
		c = 1
	}
	if len(d.ImageSize) == 2 {
		return d.ImageSize[0], d.ImageSize[1], c, "dataset.image_size"
	}
	if spec, err := datasets.Lookup(d.Name); err == nil && spec.H > 0 && spec.W > 0 {
		if d.Source == "" || !isLocalDir(strings.TrimPrefix(d.Source, "file://")) {
			return spec.H, spec.W, max(spec.C, 1), d.Name
		}
	}
	src := strings.TrimPrefix(d.Source, "file://")
	if !isLocalDir(src) {
		return 0, 0, 0, ""
	}
	var first string
	filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil || first != "" {
			return fs.SkipAll
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".png", ".jpg", ".jpeg":
			first = p
			return fs.SkipAll
		}
		return nil
	})
	if first == "" {
		return 0, 0, 0, ""
	}
	f, err := os.Open(first)
	if err != nil {
		return 0, 0, 0, ""
	}
	defer f.Close()
	ic, _, err := image.DecodeConfig(f)
	if err != nil {
		return 0, 0, 0, ""
	}
	return ic.Height, ic.Width, c, first
}
