// Command kmeans is the palette benchmark: it builds the exact colour
// histogram of a set of images, fits k-means (weighted k-means++ seeding and
// weighted Lloyd on the histogram, package kmeans), reports the quantisation
// error over all pixels exactly as ../shared/bench/kmeans_sklearn.py does,
// and times the 2^24-entry lookup table.
//
// Usage (from the repository root):
//
//	go run ./bench/kmeans -cifar ../shared/data/cifar10-exact-subset/data_batch_1_first4000.bin -k 512 -seed 0
//	go run ./bench/kmeans -jpeg-tar ../shared/data/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz -jpeg-prefix train/
//
// Prints (greppable): data:, histogram build_s:, seeding wall_s:,
// kmeans wall_s: (seeding + Lloyd, what sklearn's fit() times),
// kmeans iterations:, kmeans converged:, kmeans lloyd_s/iter:,
// kmeans mse_per_pixel: (float64 centres, exact nearest centre),
// lut build_s:, lut mse_per_pixel: (centres rounded to float32, via the LUT).
package main

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/igpt/igpt/kmeans"
)

func main() {
	var (
		cifar      = flag.String("cifar", "", "comma-separated CIFAR binary files (1 label byte + 1024 R + 1024 G + 1024 B per record)")
		labelBytes = flag.Int("label-bytes", 1, "CIFAR label bytes per record (CIFAR-100: 2)")
		jpegTar    = flag.String("jpeg-tar", "", "a .tar.gz of JPEG images (e.g. the CIFAR-10 JPEG copy)")
		jpegPrefix = flag.String("jpeg-prefix", "", "only tar entries whose name starts with this (after any leading ./ and top folder)")
		images     = flag.Int("images", 0, "keep only the first N images (0: all)")
		k          = flag.Int("k", 512, "clusters")
		seed       = flag.Uint64("seed", 0, "k-means++ seed")
		maxIter    = flag.Int("max-iter", 0, "Lloyd iteration cap (0: package default)")
		tol        = flag.Float64("tol", 0, "relative tolerance (0: package default; <0: until no centre moves)")
		workers    = flag.Int("workers", 0, "goroutines (0: GOMAXPROCS)")
		out        = flag.String("out", "", "write the centres here, one 'r g b' line per centre")
		cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of seeding + Lloyd here")
	)
	flag.Parse()
	if (*cifar == "") == (*jpegTar == "") {
		log.Fatal("give exactly one of -cifar or -jpeg-tar")
	}

	t0 := time.Now()
	var h kmeans.Histogram
	var n int
	var err error
	if *cifar != "" {
		n, err = addCIFAR(&h, strings.Split(*cifar, ","), *labelBytes, *images)
	} else {
		n, err = addJPEGTar(&h, *jpegTar, *jpegPrefix, *images)
	}
	if err != nil {
		log.Fatal(err)
	}
	x, w := h.Points()
	histS := time.Since(t0).Seconds()
	pixels := h.Total()
	fmt.Printf("# go %s GOMAXPROCS=%d workers=%d\n", runtime.Version(), runtime.GOMAXPROCS(0), *workers)
	fmt.Printf("data: images=%d pixels=%d channels=3 distinct=%d\n", n, pixels, len(w))
	effIter, effTol := *maxIter, *tol
	if effIter <= 0 {
		effIter = kmeans.DefaultMaxIter
	}
	if effTol == 0 {
		effTol = kmeans.DefaultTol
	}
	fmt.Printf("kmeans: k=%d init=k-means++(weighted, greedy) fit_on=histogram max_iter=%d tol=%g seed=%d\n", *k, effIter, effTol, *seed)
	fmt.Printf("histogram build_s: %.3f\n", histS)

	opt := kmeans.Options{K: *k, Seed: *seed, MaxIter: *maxIter, Tol: *tol, Workers: *workers}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatal(err)
		}
	}
	t1 := time.Now()
	init, err := kmeans.SeedPlusPlus(x, 3, w, opt)
	if err != nil {
		log.Fatal(err)
	}
	seedS := time.Since(t1).Seconds()
	res, err := kmeans.Lloyd(x, 3, w, init, opt)
	if err != nil {
		log.Fatal(err)
	}
	wall := time.Since(t1).Seconds()
	pprof.StopCPUProfile()
	fmt.Printf("seeding wall_s: %.3f\n", seedS)
	fmt.Printf("kmeans wall_s: %.3f\n", wall)
	fmt.Printf("kmeans iterations: %d\n", res.Iterations)
	fmt.Printf("kmeans converged: %v\n", res.Converged)
	fmt.Printf("kmeans relocated_empty: %d\n", res.Relocated)
	if res.Iterations > 0 {
		fmt.Printf("kmeans lloyd_s/iter: %.4f\n", (wall-seedS)/float64(res.Iterations))
	}
	// Lloyd's final assignment is an exact nearest-centre search over the
	// distinct colours, so FinalInertia / pixels is the exact error over all
	// pixels; recompute it independently with brute force to be sure.
	_, d2, err := kmeans.Nearest(x, 3, res.Centres)
	if err != nil {
		log.Fatal(err)
	}
	var sse float64
	for i, v := range d2 {
		sse += w[i] * v
	}
	fmt.Printf("kmeans mse_per_pixel: %.4f\n", sse/float64(pixels))
	fmt.Printf("kmeans inertia_per_point: %.4f\n", res.FinalInertia/float64(pixels))

	c32 := kmeans.Unflatten3(res.Centres)
	t2 := time.Now()
	lut, err := kmeans.NewLUT(c32)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("lut build_s: %.3f\n", time.Since(t2).Seconds())
	var lsse float64
	for i, c := range h.Colours {
		j := lut.Table[c]
		e0, e1, e2 := float64(c>>16)-float64(c32[j][0]), float64(c>>8&255)-float64(c32[j][1]), float64(c&255)-float64(c32[j][2])
		lsse += w[i] * (e0*e0 + e1*e1 + e2*e2)
	}
	fmt.Printf("lut mse_per_pixel: %.4f\n", lsse/float64(pixels))

	if *out != "" {
		var b strings.Builder
		for _, c := range c32 {
			fmt.Fprintf(&b, "%.6f %.6f %.6f\n", c[0], c[1], c[2])
		}
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("wrote %s: centres [%d, 3]\n", *out, len(c32))
	}
}

// addCIFAR counts the pixels of CIFAR binary files; it returns the number
// of images read.
func addCIFAR(h *kmeans.Histogram, paths []string, labelBytes, limit int) (int, error) {
	rec := labelBytes + 3072
	pix := make([]byte, 3072) // one image, interleaved RGB [1024, 3]
	n := 0
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return n, fmt.Errorf("read cifar: %w", err)
		}
		if len(raw) == 0 || len(raw)%rec != 0 {
			return n, fmt.Errorf("read cifar %s: %d bytes is not a whole number of %d-byte records", p, len(raw), rec)
		}
		for off := 0; off < len(raw); off += rec {
			if limit > 0 && n == limit {
				return n, nil
			}
			planes := raw[off+labelBytes : off+rec]
			for i := 0; i < 1024; i++ {
				pix[3*i], pix[3*i+1], pix[3*i+2] = planes[i], planes[1024+i], planes[2048+i]
			}
			if err := h.Add(pix); err != nil {
				return n, fmt.Errorf("cifar %s record %d: %w", p, off/rec, err)
			}
			n++
		}
	}
	return n, nil
}

// addJPEGTar counts the pixels of every .jpg in a .tar.gz (decoded with
// image/jpeg); it returns the number of images read.
func addJPEGTar(h *kmeans.Histogram, path, prefix string, limit int) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("jpeg tar: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return 0, fmt.Errorf("jpeg tar %s: %w", path, err)
	}
	tr := tar.NewReader(gz)
	var pix []byte
	n := 0
	for limit <= 0 || n < limit {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("jpeg tar %s: %w", path, err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if i := strings.IndexByte(name, '/'); i >= 0 && prefix != "" && !strings.HasPrefix(name, prefix) {
			name = name[i+1:] // allow one top-level folder
		}
		if hdr.Typeflag != tar.TypeReg || !strings.HasSuffix(strings.ToLower(name), ".jpg") || !strings.HasPrefix(name, prefix) {
			continue
		}
		img, err := jpeg.Decode(tr)
		if err != nil {
			return n, fmt.Errorf("jpeg tar %s: %s: %w", path, hdr.Name, err)
		}
		pix = rgb(img, pix[:0])
		if err := h.Add(pix); err != nil {
			return n, fmt.Errorf("jpeg tar %s: %s: %w", path, hdr.Name, err)
		}
		n++
	}
	return n, nil
}

// rgb appends the interleaved RGB bytes of img to dst.
func rgb(img image.Image, dst []byte) []byte {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			dst = append(dst, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return dst
}
