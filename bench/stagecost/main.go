// Command stagecost measures the CPU cost per image of each Beam stage's
// worker loop, on one core (GOMAXPROCS 1, one kernel thread), with the very
// functions the workers call, for an ImageNet-shaped run: source JPEGs of
// ImageNet's typical size decoded and short-side cropped to 64×64
// (download.resize 64), a palette histogram of the 64×64 pixels, quantize
// to 32×32 tokens against a 512-colour palette, vqvae-encode of the 64×64
// images with the default VQ-VAE (f = 4: 16×16 codes), and the probe's
// feature extraction of 32×32 tokens with a model preset (iGPT-S by
// default). Storage I/O is left out (records are encoded to io.Discard): on
// Dataflow the worker's CPU, not GCS, bounds these loops. The numbers feed
// docs/dataflow-cost.md.
//
//	go run ./bench/stagecost [-model S] [-jpeg 500x375] [-n 200] [-probe_images 4]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"runtime"
	"syscall"
	"time"

	"github.com/igpt/igpt/bench/internal/cpuinfo"
	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/kmeans"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/pipelines"
	"github.com/igpt/igpt/vqvae"
)

var (
	modelName   = flag.String("model", "S", "model preset whose probe features are measured")
	jpegSize    = flag.String("jpeg", "500x375", "source JPEG size, w×h (ImageNet's images average about 400×350 to 500×375)")
	noise       = flag.Float64("noise", 28, "pixel noise of the source JPEGs: 28 makes 500×375 ones weigh ~115 KB at quality 90, ImageNet train's mean (147.9 GB / 1,281,167 images)")
	n           = flag.Int("n", 200, "images per measurement (download, palette, quantize)")
	vqImages    = flag.Int("vq_images", 64, "images for the vqvae-encode measurement")
	probeImages = flag.Int("probe_images", 4, "images for the probe measurement")
	sources     = flag.Int("sources", 256, "distinct source JPEGs, cycled through (the palette's counting is cache-bound: repeated images flatter it)")
)

func main() {
	flag.Parse()
	runtime.GOMAXPROCS(1)
	kernels.SetThreads(1)
	var w, h int
	if _, err := fmt.Sscanf(*jpegSize, "%dx%d", &w, &h); err != nil {
		log.Fatalf("stagecost: -jpeg %q: %v", *jpegSize, err)
	}
	fmt.Printf("# %s, one core (GOMAXPROCS 1); %s\n", cpuinfo.Describe(), time.Now().UTC().Format("2006-01-02"))
	fmt.Printf("%-14s %-58s %12s %12s\n", "stage", "work per image", "cpu_ms", "wall_ms")
	rng := rand.New(rand.NewPCG(1, 2))
	srcs := make([][]byte, *sources)
	var jpegBytes int
	for i := range srcs {
		srcs[i] = naturalJPEG(rng, w, h)
		jpegBytes += len(srcs[i])
	}

	// download: decode + short-side crop to 64×64 + the Image record.
	imgs := make([]records.Image, *n)
	report("download", fmt.Sprintf("decode a %d×%d JPEG (%d KB), crop to 64×64, encode", w, h, jpegBytes/len(srcs)/1000), *n, func() {
		rw := mustWriter(records.KindImage)
		for i := range imgs {
			img, err := datasets.Decode(datasets.Item{Key: fmt.Sprint(i), Encoded: srcs[i%len(srcs)], Source: "bench"}, datasets.Options{})
			check(err)
			img.Pix, err = imgproc.ShortSideCrop(img.Pix, img.H, img.W, img.C, 64)
			check(err)
			img.H, img.W = 64, 64
			check(rw.Write(&img))
			imgs[i] = img
		}
		check(rw.Flush())
	})

	// palette: count the pixels into the worker's dense histogram.
	var counts kmeans.Counts
	report("palette", "count a 64×64 image's pixels (kmeans.Counts)", *n, func() {
		for i := range imgs {
			check(counts.Add(imgs[i].Pix))
		}
	})

	// palette, merge: the single merging worker adds every shard's part.
	var part bytes.Buffer
	_, err := counts.WriteTo(&part)
	check(err)
	var merged kmeans.Counts
	report("palette-merge", fmt.Sprintf("add one part (%d colours, %d KB) to the merged counts", counts.Distinct(), part.Len()/1000), 1, func() {
		check(merged.MergeFrom(bytes.NewReader(part.Bytes()), "part"))
	})

	// quantize: resize to 32×32, map through a 512-colour table, encode.
	centres := make([][3]float32, 512)
	for i := range centres {
		centres[i] = [3]float32{float32(rng.IntN(256)), float32(rng.IntN(256)), float32(rng.IntN(256))}
	}
	lut, err := kmeans.NewLUT(centres)
	check(err)
	toks := make([]records.Tokens, *n)
	report("quantize", "resize 64×64 → 32×32, 512-colour lookup, encode", *n, func() {
		rw := mustWriter(records.KindTokens)
		for i := range imgs {
			t, err := pipelines.Tokenize(imgs[i], lut, 512, [2]int{32, 32})
			check(err)
			check(rw.Write(&t))
			toks[i] = t
		}
		check(rw.Flush())
	})

	// vqvae-encode: the default VQ-VAE (f = 4) on 64×64 images, batch 32.
	vq, err := vqvae.New(vqvae.DefaultConfig(), 1)
	check(err)
	report("vqvae-encode", "default VQ-VAE (hidden 128, f 4) on 64×64 → 16×16 codes", *vqImages, func() {
		enc := pipelines.NewVQEncoder(vq, [2]int{}, 32)
		for i := range *vqImages {
			check(enc.Add(imgs[i%len(imgs)]))
			if enc.Full() {
				_, err := enc.Flush()
				check(err)
			}
		}
		_, err := enc.Flush()
		check(err)
	})

	// probe: every layer's features of 32×32 tokens.
	mc, err := model.Preset(*modelName)
	check(err)
	m, err := model.New(mc)
	check(err)
	m.Params.Init(1)
	const batch = 2
	tok := make([]int32, batch*mc.Seq)
	feats := make([]float32, (mc.Layers+1)*batch*mc.D)
	report("probe", fmt.Sprintf("features of every layer, %s (%d layers, d %d), 1024 tokens, batch %d", *modelName, mc.Layers, mc.D, batch), *probeImages, func() {
		for done := 0; done < *probeImages; done += batch {
			for b := range batch {
				for t, v := range toks[(done+b)%len(toks)].Tok {
					tok[b*mc.Seq+t] = int32(v)
				}
			}
			check(m.Probe(tok, nil, model.AR, feats))
		}
	})
}

// report runs f once over images images and prints its CPU and wall time
// per image (per part for palette-merge).
func report(stage, what string, images int, f func()) {
	runtime.GC()
	c0, t0 := cpuTime(), time.Now()
	f()
	cpu, wall := cpuTime()-c0, time.Since(t0)
	fmt.Printf("%-14s %-58s %12.3f %12.3f\n", stage, what, cpu.Seconds()*1e3/float64(images), wall.Seconds()*1e3/float64(images))
}

// cpuTime is this process's user + system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mustWriter(kind records.Kind) *records.Writer {
	w, err := records.NewWriter(io.Discard, kind)
	check(err)
	return w
}

// naturalJPEG draws a w×h picture with smooth shading and sensor-like
// noise (-noise), and encodes it at quality 90.
func naturalJPEG(rng *rand.Rand, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	base := [3]float64{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}
	fx, fy := rng.Float64()*0.05, rng.Float64()*0.05
	for y := range h {
		for x := range w {
			var c [3]uint8
			for t := range c {
				v := base[t] + 60*math.Sin(fx*float64(x)+float64(t)) + 60*math.Cos(fy*float64(y)*float64(t+1)) + rng.NormFloat64()**noise
				c[t] = uint8(max(0, min(255, v)))
			}
			img.Set(x, y, color.RGBA{c[0], c[1], c[2], 255})
		}
	}
	var b bytes.Buffer
	check(jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}))
	return b.Bytes()
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
