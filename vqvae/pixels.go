package vqvae

import "math"

// The model's pixel convention: an 8-bit channel value p enters as
// p/255 − 0.5, and a model value v leaves as round((v+0.5)·255) clamped
// to 0…255. Training, encoding and decoding all go through these two.

// AppendInput appends the model inputs of 8-bit RGB pixels to dst.
func AppendInput(dst []float32, rgb []byte) []float32 {
	for _, p := range rgb {
		dst = append(dst, float32(p)/255-0.5)
	}
	return dst
}

// OutputPixel maps a model value back to a 0–255 pixel value (as a float,
// rounded and clamped).
func OutputPixel(v float32) float32 {
	p := math.Round(float64(v+0.5) * 255)
	return float32(min(255, max(0, p)))
}
