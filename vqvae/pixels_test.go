package vqvae

import (
	"math"
	"testing"
)

// TestPixelConvention checks the input scaling against its definition,
// computed in float64 (p/255 − 0.5: 0 → −0.5, 255 → +0.5), and that every
// 8-bit value survives the round trip through OutputPixel.
func TestPixelConvention(t *testing.T) {
	rgb := make([]byte, 256)
	for p := range rgb {
		rgb[p] = byte(p)
	}
	in := AppendInput(nil, rgb)
	for p, v := range in {
		// float32 division rounds once more than the float64 reference.
		if want := float64(p)/255 - 0.5; math.Abs(float64(v)-want) > 1e-7 {
			t.Fatalf("pixel %d enters as %v, want %v", p, v, want)
		}
		if back := OutputPixel(v); back != float32(p) {
			t.Fatalf("pixel %d comes back as %v", p, back)
		}
	}
	if in[0] != -0.5 || in[255] != 0.5 {
		t.Fatalf("range [%v, %v], want [-0.5, 0.5]", in[0], in[255])
	}
}
