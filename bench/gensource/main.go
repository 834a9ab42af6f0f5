// Command gensource writes a synthetic WebDataset source for the memory
// benchmark: tar shards of n JPEG images (side×side, smooth random colour
// fields, quality 90) with integer .cls labels, split into train and test.
//
//	go run ./bench/gensource -out /tmp/src -n 200000 -side 64 -classes 100 -per_shard 10000
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

func main() {
	out := flag.String("out", "", "output folder")
	n := flag.Int("n", 200000, "images in all (test gets one in ten)")
	side := flag.Int("side", 64, "image side in pixels")
	classes := flag.Int("classes", 100, "number of labels")
	perShard := flag.Int("per_shard", 10000, "images per tar shard")
	flag.Parse()
	if *out == "" {
		log.Fatal("gensource: -out is required")
	}
	rng := rand.New(rand.NewPCG(1, uint64(*n)))
	for _, split := range []string{"train", "test"} {
		if err := os.MkdirAll(filepath.Join(*out, split), 0o755); err != nil {
			log.Fatal(err)
		}
		count := *n / 10
		if split == "train" {
			count = *n - count
		}
		for s := 0; s*(*perShard) < count; s++ {
			m := min(*perShard, count-s*(*perShard))
			path := filepath.Join(*out, split, fmt.Sprintf("%06d.tar", s))
			if err := writeShard(path, rng, s*(*perShard), m, *side, *classes); err != nil {
				log.Fatal(err)
			}
		}
	}
}

func writeShard(path string, rng *rand.Rand, first, m, side, classes int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	tw := tar.NewWriter(bw)
	img := image.NewRGBA(image.Rect(0, 0, side, side))
	var buf bytes.Buffer
	for i := range m {
		r, g, b := rng.IntN(256), rng.IntN(256), rng.IntN(256)
		dx, dy := rng.IntN(5)-2, rng.IntN(5)-2
		for y := range side {
			for x := range side {
				img.Set(x, y, color.RGBA{uint8(r + dx*x), uint8(g + dy*y), uint8(b + (x^y)&15), 255})
			}
		}
		buf.Reset()
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
			return err
		}
		key := fmt.Sprintf("%09d", first+i)
		cls := []byte(strconv.Itoa(rng.IntN(classes)))
		for _, mem := range []struct {
			name string
			data []byte
		}{{key + ".jpg", buf.Bytes()}, {key + ".cls", cls}} {
			if err := tw.WriteHeader(&tar.Header{Name: mem.name, Mode: 0o644, Size: int64(len(mem.data)), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			if _, err := tw.Write(mem.data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
