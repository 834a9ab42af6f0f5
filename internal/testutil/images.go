package testutil

import (
	"archive/tar"
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
)

// JPEG encodes a small random-coloured h×w JPEG (a gradient over a random
// base colour), as the scale tests and bench/dataflow put in their sources.
func JPEG(rng *rand.Rand, h, w int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	base := color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255}
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{base.R + uint8(x*4), base.G + uint8(y*4), base.B, 255})
		}
	}
	var b bytes.Buffer
	jpeg.Encode(&b, img, &jpeg.Options{Quality: 80})
	return b.Bytes()
}

// Tar writes members (names[i] holding data[i], in order) as a tar.
func Tar(names []string, data [][]byte) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(data[i])), Typeflag: tar.TypeReg})
		tw.Write(data[i])
	}
	tw.Close()
	return b.Bytes()
}
