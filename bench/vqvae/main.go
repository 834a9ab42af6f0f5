// Command vqvae times the VQ-VAE of package vqvae: a training step
// (forward, backward, EMA codebook update, Adam) and encoding (encoder and
// nearest code), in the configuration of bench/vqvae_reference.py bench,
// printing the same JSON lines. bench/vqvae_vs_torch.sh runs both.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/vqvae"
)

func main() {
	batch := flag.Int("batch", 32, "training batch")
	size := flag.Int("size", 32, "image side")
	factor := flag.Int("factor", 4, "downsampling factor")
	threads := flag.Int("threads", 2, "kernel threads")
	steps := flag.Int("steps", 20, "timed training steps")
	encBatch := flag.Int("encode-batch", 256, "images per encode call")
	encReps := flag.Int("encode-reps", 5, "timed encode calls")
	flag.Parse()
	kernels.SetThreads(*threads)
	cfg := vqvae.DefaultConfig()
	cfg.Factor, cfg.DeadAfter = *factor, 0
	m, err := vqvae.New(cfg, 1)
	if err != nil {
		log.Fatal(err)
	}
	a := vqvae.NewAdam(m, 3e-4, 0.9, 0.999, 1e-8)
	r := rand.New(rand.NewPCG(1, 2))
	img := func(n int) []float32 {
		x := make([]float32, n**size**size*3)
		for i := range x {
			x[i] = float32(r.Float64() - 0.5)
		}
		return x
	}
	x := img(*batch)
	step := func() {
		if _, _, err := vqvae.TrainStep(m, a, x, *batch, *size, *size, 0.06); err != nil {
			log.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		step()
	}
	t0 := time.Now()
	for i := 0; i < *steps; i++ {
		step()
	}
	dt := time.Since(t0).Seconds() / float64(*steps)
	emit("train_step", *batch, *size, *factor, *threads, dt)
	xe := img(*encBatch)
	codes := make([]uint16, *encBatch*(*size / *factor)*(*size / *factor))
	enc := func() {
		if err := m.Encode(codes, xe, *encBatch, *size, *size); err != nil {
			log.Fatal(err)
		}
	}
	enc()
	t0 = time.Now()
	for i := 0; i < *encReps; i++ {
		enc()
	}
	dt = time.Since(t0).Seconds() / float64(*encReps)
	emit("encode", *encBatch, *size, *factor, *threads, dt)
}

func emit(what string, batch, size, factor, threads int, dt float64) {
	b, _ := json.Marshal(map[string]any{"impl": "go", "what": what, "batch": batch, "size": size, "factor": factor,
		"threads": threads, "path": kernels.Path(), "ms": dt * 1e3, "images_per_s": float64(batch) / dt})
	fmt.Fprintln(os.Stdout, string(b))
}
