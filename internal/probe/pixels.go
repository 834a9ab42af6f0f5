package probe

import (
	"fmt"

	"github.com/igpt/igpt/internal/records"
)

// PixelFeatures is the raw-pixel baseline's feature vector of an image at a
// chosen resolution: the image area-downsampled to h×w (every output pixel
// the mean of the input area it covers, fractional overlaps weighted; one
// step, not repeated halving), then pixel/255, flattened in the record's
// HWC order. At the image's own size it equals the features the raw-pixel
// pipeline writes (float32(v)/255), bit for bit, so one function serves raw
// pixels at the original and at a model's input resolution. Upsampling is
// refused.
func PixelFeatures(img records.Image, h, w int) ([]float32, error) {
	H, W, C := img.H, img.W, img.C
	if H <= 0 || W <= 0 || C <= 0 || len(img.Pix) != H*W*C {
		return nil, fmt.Errorf("probe: pixel features of %q: %d bytes for %d×%d×%d", img.Key, len(img.Pix), H, W, C)
	}
	if h <= 0 || w <= 0 || h > H || w > W {
		return nil, fmt.Errorf("probe: pixel features of %q: %d×%d is not a downsampling of %d×%d", img.Key, h, w, H, W)
	}
	out := make([]float32, h*w*C)
	if h == H && w == W {
		for i, v := range img.Pix {
			out[i] = float32(v) / 255
		}
		return out, nil
	}
	// Separable box filter: rows of the input into w columns, then h rows.
	cols := make([]float64, H*w*C)
	wx := areaWeights(W, w)
	for y := 0; y < H; y++ {
		for ox, taps := range wx {
			for c := 0; c < C; c++ {
				s := 0.0
				for _, t := range taps {
					s += t.w * float64(img.Pix[(y*W+t.i)*C+c])
				}
				cols[(y*w+ox)*C+c] = s
			}
		}
	}
	for oy, taps := range areaWeights(H, h) {
		for i := 0; i < w*C; i++ {
			s := 0.0
			for _, t := range taps {
				s += t.w * cols[t.i*w*C+i]
			}
			out[oy*w*C+i] = float32(s / 255)
		}
	}
	return out, nil
}

type tap struct {
	i int
	w float64
}

// areaWeights returns, for each of out output cells over in input cells
// (out ≤ in), the input cells it covers and their weights (overlap length ×
// out/in, summing to 1).
func areaWeights(in, out int) [][]tap {
	taps := make([][]tap, out)
	scale := float64(in) / float64(out)
	for o := range taps {
		a, b := float64(o)*scale, float64(o+1)*scale
		for i := int(a); i < in && float64(i) < b; i++ {
			lo, hi := max(a, float64(i)), min(b, float64(i+1))
			if hi > lo {
				taps[o] = append(taps[o], tap{i, (hi - lo) / scale})
			}
		}
	}
	return taps
}
