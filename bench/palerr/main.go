// Command palerr measures the reconstruction error of palette tokens on a
// split of a download stage's Image shards, in the units of the VQ-VAE's
// eval (vqvae-train's eval_mse_255), so that "tokens per image vs
// reconstruction error" compares like with like:
//
//   - palette32: every pixel of the 32×32 image replaced by its nearest
//     palette colour (1024 tokens per image);
//   - palette16: the image area-downsampled to 16×16 (imgproc.Resize, as
//     quantize's resize does), each pixel replaced by its nearest palette
//     colour, then upsampled back to 32×32 (Resize repeats pixels) and
//     compared with the original (256 tokens per image);
//   - resize16: the same down and up without the palette (the error of the
//     16×16 grid alone).
//
// Decoded images hold palette colours rounded to whole 0–255 values, as a
// saved image would (the VQ-VAE eval rounds its reconstructions the same
// way). Errors are printed both per channel value (the mean over R, G and
// B, vqvae-train's unit) and per pixel (the sum over R, G and B, the
// palette stage's "mse" unit, 3× the former), with PSNR from the former.
//
//	go run ./bench/palerr -download ROOT/download/KEY -palette ROOT/palette/KEY/palette.msgpack
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/kmeans"
)

type result struct {
	Name             string  `json:"name"`
	TokensPerImage   int     `json:"tokens_per_image"`
	MSEPerChannel255 float64 `json:"mse_per_channel_255"` // mean over R, G, B values
	MSEPerPixel255   float64 `json:"mse_per_pixel_255"`   // sum over R, G, B
	PSNR             float64 `json:"psnr_db"`
}

func main() {
	dl := flag.String("download", "", "download stage folder (holds SPLIT-*.msgpack Image shards)")
	palPath := flag.String("palette", "", "palette stage's palette.msgpack")
	split := flag.String("split", "test", "split to measure")
	low := flag.Int("low", 16, "side of the downsampled grid")
	flag.Parse()
	if *dl == "" || *palPath == "" {
		log.Fatal("palerr: -download and -palette are required")
	}
	data, err := os.ReadFile(*palPath)
	if err != nil {
		log.Fatal(err)
	}
	pal, err := records.DecodePalette(data, *palPath)
	if err != nil {
		log.Fatal(err)
	}
	lut, err := kmeans.NewLUT(pal.Centres)
	if err != nil {
		log.Fatal(err)
	}
	rounded := make([][3]uint8, len(pal.Centres))
	for i, c := range pal.Centres {
		for k := range c {
			rounded[i][k] = uint8(math.Round(float64(min(255, max(0, c[k])))))
		}
	}
	shards, err := filepath.Glob(filepath.Join(*dl, *split+"-*.msgpack"))
	if err != nil || len(shards) == 0 {
		log.Fatalf("palerr: no %s shards in %s (%v)", *split, *dl, err)
	}
	sort.Strings(shards)

	// Sums of squared errors over every channel value.
	var se32, se32f, se16, seRes float64
	var values, images int
	L := *low
	for _, path := range shards {
		f, err := os.Open(path)
		if err != nil {
			log.Fatal(err)
		}
		err = records.Scan(f, path, func(im records.Image) error {
			if im.C != 3 {
				return fmt.Errorf("%s: image %s has %d channels", path, im.Key, im.C)
			}
			h, w := im.H, im.W
			tok := make([]uint16, h*w)
			if err := lut.Map(im.Pix, tok); err != nil {
				return err
			}
			for i, t := range tok {
				for k := 0; k < 3; k++ {
					v := float64(im.Pix[3*i+k])
					d := v - float64(rounded[t][k])
					se32 += d * d
					df := v - float64(pal.Centres[t][k])
					se32f += df * df
				}
			}
			small, err := imgproc.Resize(im.Pix, h, w, 3, L, L)
			if err != nil {
				return err
			}
			up, err := imgproc.Resize(small, L, L, 3, h, w)
			if err != nil {
				return err
			}
			for i, v := range im.Pix {
				d := float64(v) - float64(up[i])
				seRes += d * d
			}
			stok := make([]uint16, L*L)
			if err := lut.Map(small, stok); err != nil {
				return err
			}
			dec := make([]byte, L*L*3)
			for i, t := range stok {
				copy(dec[3*i:3*i+3], rounded[t][:])
			}
			up, err = imgproc.Resize(dec, L, L, 3, h, w)
			if err != nil {
				return err
			}
			for i, v := range im.Pix {
				d := float64(v) - float64(up[i])
				se16 += d * d
			}
			values += len(im.Pix)
			images++
			return nil
		})
		f.Close()
		if err != nil {
			log.Fatal(err)
		}
	}
	mk := func(name string, tokens int, se float64) result {
		m := se / float64(values)
		return result{name, tokens, m, 3 * m, 10 * math.Log10(255*255/m)}
	}
	h := int(math.Sqrt(float64(values / images / 3)))
	out := map[string]any{
		"split": *split, "images": images, "palette_k": pal.K, "palette_stage_mse_per_pixel_train": pal.MSE,
		"results": []result{
			mk(fmt.Sprintf("palette %d×%d", h, h), h*h, se32),
			mk(fmt.Sprintf("palette %d×%d, float centres", h, h), h*h, se32f),
			mk(fmt.Sprintf("palette %d×%d (area down, up)", L, L), L*L, se16),
			mk(fmt.Sprintf("resize %d×%d without palette", L, L), 0, seRes),
		},
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		log.Fatal(err)
	}
}
