package datasets

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // register the JPEG decoder
	_ "image/png"  // register the PNG decoder

	"github.com/igpt/igpt/internal/records"
)

// ErrSkipped is wrapped by Decode's error for a bad image when
// Options.OnBad is "skip"; the caller drops the image and goes on.
var ErrSkipped = errors.New("datasets: image skipped")

// maxDecodePixels bounds the size of an image Decode accepts, so that a
// hostile header cannot make it allocate gigabytes. (A variable so that fuzz
// tests can lower it.)
var maxDecodePixels int64 = 1 << 26

// Decode turns an Item into a records.Image: it copies raw pixels, or
// decodes PNG/JPEG bytes, converts to Options.Channels (encoded images
// default to 3; raw pixels keep their channels when it is 0) and checks
// Options.ImageSize. With OnBad "skip" a bad image gives ErrSkipped wrapped
// with the reason and the Item.Source; otherwise the error names the
// Item.Source and the reason.
func Decode(it Item, opt Options) (records.Image, error) {
	if err := opt.Validate(); err != nil {
		return records.Image{}, err
	}
	h, w, c, pix, reason := decodePixels(it, opt)
	if reason != nil {
		if opt.OnBad == "skip" {
			return records.Image{}, fmt.Errorf("%w: %s: %w", ErrSkipped, it.Source, reason)
		}
		return records.Image{}, fmt.Errorf("datasets: decode %s: %w (set OnBad to \"skip\" to leave such images out)", it.Source, reason)
	}
	return records.Image{Key: it.Key, Label: it.Label, H: h, W: w, C: c, Pix: pix}, nil
}

func decodePixels(it Item, opt Options) (h, w, c int, pix []byte, reason error) {
	want := opt.Channels
	switch {
	case it.Pix != nil:
		h, w, c = it.H, it.W, it.C
		if h <= 0 || w <= 0 || (c != 1 && c != 3) || len(it.Pix) != h*w*c {
			return 0, 0, 0, nil, fmt.Errorf("raw pixels: %d bytes for %d×%d×%d", len(it.Pix), h, w, c)
		}
		if err := checkSize(h, w, opt); err != nil {
			return 0, 0, 0, nil, err
		}
		switch {
		case want == 0 || want == c:
			pix = bytes.Clone(it.Pix)
		case want == 3:
			pix = make([]byte, h*w*3)
			for i, v := range it.Pix {
				pix[3*i], pix[3*i+1], pix[3*i+2] = v, v, v
			}
			c = 3
		default:
			pix = make([]byte, h*w)
			for i := range pix {
				pix[i] = luma(it.Pix[3*i], it.Pix[3*i+1], it.Pix[3*i+2])
			}
			c = 1
		}
		return h, w, c, pix, nil
	case it.Encoded != nil:
		cfg, format, err := image.DecodeConfig(bytes.NewReader(it.Encoded))
		if err != nil {
			return 0, 0, 0, nil, fmt.Errorf("not a readable PNG or JPEG image: %w", err)
		}
		if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxDecodePixels {
			return 0, 0, 0, nil, fmt.Errorf("%s image of %d×%d pixels is empty or too large", format, cfg.Width, cfg.Height)
		}
		if err := checkSize(cfg.Height, cfg.Width, opt); err != nil {
			return 0, 0, 0, nil, err
		}
		img, _, err := image.Decode(bytes.NewReader(it.Encoded))
		if err != nil {
			return 0, 0, 0, nil, fmt.Errorf("bad %s image: %w", format, err)
		}
		b := img.Bounds()
		h, w = b.Dy(), b.Dx()
		if err := checkSize(h, w, opt); err != nil {
			return 0, 0, 0, nil, err
		}
		if want == 1 {
			return h, w, 1, toGray(img), nil
		}
		return h, w, 3, toRGB(img), nil
	}
	return 0, 0, 0, nil, errors.New("the item has neither pixels nor an encoded image")
}

func checkSize(h, w int, opt Options) error {
	if opt.ImageSize != [2]int{} && (h != opt.ImageSize[0] || w != opt.ImageSize[1]) {
		return fmt.Errorf("image is %d×%d (h×w), want %d×%d", h, w, opt.ImageSize[0], opt.ImageSize[1])
	}
	return nil
}

// luma is ITU-R 601 luma, as image/color's GrayModel and PIL compute it.
func luma(r, g, b byte) byte {
	return byte((19595*uint32(r) + 38470*uint32(g) + 7471*uint32(b) + 1<<15) >> 16)
}

// toRGB returns img's pixels as HWC RGB bytes; alpha is dropped (the colour
// values are taken un-premultiplied).
func toRGB(img image.Image) []byte {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := make([]byte, 0, w*h*3)
	switch m := img.(type) {
	case *image.YCbCr:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				yi, ci := m.YOffset(x, y), m.COffset(x, y)
				r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				out = append(out, r, g, bl)
			}
		}
	case *image.Gray:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := m.Pix[m.PixOffset(b.Min.X, y):][:w]
			for _, v := range row {
				out = append(out, v, v, v)
			}
		}
	case *image.NRGBA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := m.Pix[m.PixOffset(b.Min.X, y):][:4*w]
			for i := 0; i < len(row); i += 4 {
				out = append(out, row[i], row[i+1], row[i+2])
			}
		}
	case *image.Paletted:
		pal := make([][3]byte, len(m.Palette))
		for i, c := range m.Palette {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			pal[i] = [3]byte{n.R, n.G, n.B}
		}
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := m.Pix[m.PixOffset(b.Min.X, y):][:w]
			for _, v := range row {
				var p [3]byte
				if int(v) < len(pal) {
					p = pal[v]
				}
				out = append(out, p[0], p[1], p[2])
			}
		}
	default:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				n := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
				out = append(out, n.R, n.G, n.B)
			}
		}
	}
	return out
}

// toGray returns img's pixels as grey bytes.
func toGray(img image.Image) []byte {
	if m, ok := img.(*image.Gray); ok {
		b := m.Bounds()
		out := make([]byte, 0, b.Dx()*b.Dy())
		for y := b.Min.Y; y < b.Max.Y; y++ {
			out = append(out, m.Pix[m.PixOffset(b.Min.X, y):][:b.Dx()]...)
		}
		return out
	}
	rgb := toRGB(img)
	out := make([]byte, len(rgb)/3)
	for i := range out {
		out[i] = luma(rgb[3*i], rgb[3*i+1], rgb[3*i+2])
	}
	return out
}
