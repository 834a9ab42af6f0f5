package probe

import (
	"fmt"

	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
)

// PixelFeatures is the raw-pixel baseline's feature vector of an image at a
// chosen resolution: the image resized to h×w by imgproc.Resize (the area
// filter, rounded to bytes, that the quantize stage applies before
// tokenising, so at the model's input size these are exactly the pixels the
// model is given), then pixel/255, flattened in the record's HWC order. At
// the image's own size it equals the features the raw-pixel pipeline
// writes (float32(v)/255), bit for bit, so one function serves raw pixels
// at the original and at a model's input resolution.
func PixelFeatures(img records.Image, h, w int) ([]float32, error) {
	pix, err := imgproc.Resize(img.Pix, img.H, img.W, img.C, h, w)
	if err != nil {
		return nil, fmt.Errorf("probe: pixel features of image %q: %w", img.Key, err)
	}
	out := make([]float32, len(pix))
	for i, v := range pix {
		out[i] = float32(v) / 255
	}
	return out, nil
}
