package pipelines

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"testing"

	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/imgproc"
)

// BenchmarkDecodeResizeImageNetJPEG measures one core's work per ImageNet
// image in the download stage: decode a 500×375 JPEG (ImageNet's median
// size, quality 90) and crop its short side to 64, the figure the cost
// estimate in infra/README.md rests on.
func BenchmarkDecodeResizeImageNetJPEG(b *testing.B) {
	img := image.NewRGBA(image.Rect(0, 0, 500, 375))
	for y := range 375 {
		for x := range 500 {
			img.Set(x, y, color.RGBA{uint8(x ^ y), uint8(x * y / 97), uint8(3*x + y), 255})
		}
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	it := datasets.Item{Key: "k", Source: "bench", Encoded: buf.Bytes()}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		im, err := datasets.Decode(it, datasets.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := imgproc.ShortSideCrop(im.Pix, im.H, im.W, im.C, 64); err != nil {
			b.Fatal(err)
		}
	}
}
