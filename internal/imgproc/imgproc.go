// Package imgproc holds the small image operations igpt's stages share:
// area resizing and channel conversion of HWC uint8 pixels, and the one PNG
// grid drawer (Grid) for swatches, samples and token pictures.
package imgproc

import "fmt"

// Resize scales an h×w×c HWC image to nh×nw with an area (box) filter:
// each output pixel is the area-weighted mean of the input pixels it
// covers, rounded to nearest. For integer downscale factors (64→32) this is
// the plain mean of each factor×factor block; upscaling repeats pixels.
func Resize(pix []byte, h, w, c, nh, nw int) ([]byte, error) {
	if len(pix) != h*w*c || h <= 0 || w <= 0 || c <= 0 || nh <= 0 || nw <= 0 {
		return nil, fmt.Errorf("imgproc: resize %d bytes as %d×%d×%d to %d×%d: bad shape", len(pix), h, w, c, nh, nw)
	}
	if h == nh && w == nw {
		return append([]byte(nil), pix...), nil
	}
	ys := spans(h, nh) // for each output row: input rows and weights
	xs := spans(w, nw)
	out := make([]byte, nh*nw*c)
	acc := make([]float64, c)
	for oy, ry := range ys {
		for ox, rx := range xs {
			for k := range acc {
				acc[k] = 0
			}
			for _, sy := range ry {
				for _, sx := range rx {
					wgt := sy.w * sx.w
					p := pix[(sy.i*w+sx.i)*c:]
					for k := 0; k < c; k++ {
						acc[k] += wgt * float64(p[k])
					}
				}
			}
			o := out[(oy*nw+ox)*c:]
			for k := 0; k < c; k++ {
				o[k] = uint8(min(255, acc[k]+0.5))
			}
		}
	}
	return out, nil
}

type tap struct {
	i int     // input index
	w float64 // weight; the taps of one output sum to 1
}

// spans maps each of m output cells to the n input cells it overlaps, with
// the overlap as weight (normalised).
func spans(n, m int) [][]tap {
	out := make([][]tap, m)
	scale := float64(n) / float64(m)
	for o := range out {
		lo, hi := float64(o)*scale, float64(o+1)*scale
		for i := int(lo); i < n && float64(i) < hi; i++ {
			ov := min(hi, float64(i+1)) - max(lo, float64(i))
			if ov > 1e-12 {
				out[o] = append(out[o], tap{i, ov / scale})
			}
		}
	}
	return out
}

// ToRGB returns pix as RGB: grey (c=1) is replicated, RGB is returned as is.
func ToRGB(pix []byte, c int) ([]byte, error) {
	switch c {
	case 3:
		return pix, nil
	case 1:
		out := make([]byte, 3*len(pix))
		for i, v := range pix {
			out[3*i], out[3*i+1], out[3*i+2] = v, v, v
		}
		return out, nil
	}
	return nil, fmt.Errorf("imgproc: %d channels: want 1 (grey) or 3 (RGB)", c)
}

// ShortSideCrop scales an h×w×c image so that its short side is side (area
// filter, as Resize) and cuts the centre side×side square out of it: the
// paper's preparation of ImageNet at 32, 48 and 64 pixels.
func ShortSideCrop(pix []byte, h, w, c, side int) ([]byte, error) {
	if side <= 0 {
		return nil, fmt.Errorf("imgproc: short-side crop to %d: side must be > 0", side)
	}
	nh, nw := side, side
	if h < w {
		nw = max(side, (w*side+h/2)/h) // round to nearest, never below side
	} else {
		nh = max(side, (h*side+w/2)/w)
	}
	scaled, err := Resize(pix, h, w, c, nh, nw)
	if err != nil {
		return nil, err
	}
	y0, x0 := (nh-side)/2, (nw-side)/2
	out := make([]byte, side*side*c)
	for y := range side {
		copy(out[y*side*c:(y+1)*side*c], scaled[((y0+y)*nw+x0)*c:])
	}
	return out, nil
}
