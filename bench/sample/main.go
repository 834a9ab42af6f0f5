// Command sample measures autoregressive sampling speed of package model
// on the CPU: decoding with the key/value cache (Model.Sample's Sampler)
// against the naive baseline that recomputes the whole forward pass for
// every new token (Model.SampleNaive, O(T²)), on a randomly initialised
// model (speed does not depend on the weights).
//
// Usage:
//
//	go run ./bench/sample -preset nano -batch 16 -n 1024 -naive-n 128 -threads 2 [-prefix 512]
//
// The cached sampler generates -n tokens per sequence (a full image at
// -n = Seq) and, for a like-for-like comparison, the first -naive-n; the
// naive one only the first -naive-n, since its cost grows with the square
// of the length. With -prefix P it also times a completion from P known
// tokens (the prefix runs through the model at once, Sampler.Prefill).
// Prints (greppable):
//
//	config: …
//	cached n=N: X tokens/s (S s for B×N tokens)
//	completion n=N from prefix P: X sampled tokens/s (…)   (with -prefix)
//	cached n=M: X tokens/s (…)
//	naive  n=M: X tokens/s (…)
//	speed-up at n=M: X×; same tokens: true
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/model"
)

func main() {
	preset := flag.String("preset", "nano", "model size (model.Presets)")
	batch := flag.Int("batch", 16, "sequences sampled together")
	n := flag.Int("n", 0, "tokens per sequence for the cached sampler (0: the preset's Seq, a full image)")
	naiveN := flag.Int("naive-n", 128, "tokens per sequence for the naive baseline and the like-for-like cached run (0: skip)")
	threads := flag.Int("threads", 2, "threads (GOMAXPROCS and kernels.SetThreads)")
	seed := flag.Uint64("seed", 1, "seed of the weights and the draws")
	topK := flag.Int("top-k", 0, "sampling top-k (0: off)")
	topP := flag.Float64("top-p", 0, "sampling top-p (0: off)")
	temp := flag.Float64("temperature", 1, "sampling temperature")
	prefix := flag.Int("prefix", 0, "also time a completion of -n tokens from a random prefix of this many (e.g. Seq/2: a half-image completion; 0: skip)")
	flag.Parse()

	runtime.GOMAXPROCS(*threads)
	kernels.SetThreads(*threads)
	cfg, err := model.Preset(*preset)
	if err != nil {
		fail(err)
	}
	if *n == 0 {
		*n = cfg.Seq
	}
	m, err := model.New(cfg)
	if err != nil {
		fail(err)
	}
	m.Params.Init(*seed)
	r := rand.New(rand.NewPCG(*seed, 1)) // a non-zero head (Init's is zero)
	for i := range m.Params.LMHead {
		m.Params.LMHead[i] = float32(0.02 * r.NormFloat64())
	}
	opt := model.SampleOptions{Temperature: *temp, TopK: *topK, TopP: *topP, Seed: *seed}
	if err := opt.Validate(); err != nil {
		fail(err)
	}
	B := *batch
	fmt.Printf("config: %s %v batch %d threads %d kernels %s temperature %g top-k %d top-p %g\n",
		*preset, cfg, B, *threads, kernels.Path(), *temp, *topK, *topP)

	s, err := model.NewSampler(m, B)
	if err != nil {
		fail(err)
	}
	defer s.Close()
	if _, err := s.Sample(nil, min(16, *n), opt); err != nil { // warm-up
		fail(err)
	}
	cached := func(n int) ([]int32, float64) {
		t0 := time.Now()
		out, err := s.Sample(nil, n, opt)
		if err != nil {
			fail(err)
		}
		sec := time.Since(t0).Seconds()
		fmt.Printf("cached n=%d: %.0f tokens/s (%.3f s for %d×%d tokens)\n", n, float64(B*n)/sec, sec, B, n)
		return out, sec
	}
	cached(*n)
	if P := *prefix; P > 0 && P < *n {
		pre := make([]int32, B*P)
		for i := range pre {
			pre[i] = int32(r.IntN(cfg.Vocab))
		}
		t0 := time.Now()
		if _, err := s.Sample(pre, *n, opt); err != nil {
			fail(err)
		}
		sec := time.Since(t0).Seconds()
		fmt.Printf("completion n=%d from prefix %d: %.0f sampled tokens/s (%.3f s for %d×%d sampled tokens, prefill included)\n",
			*n, P, float64(B*(*n-P))/sec, sec, B, *n-P)
	}
	if *naiveN <= 0 {
		return
	}
	k := min(*naiveN, *n)
	short, cs := cached(k)
	t0 := time.Now()
	naive, err := m.SampleNaive(nil, B, k, opt)
	if err != nil {
		fail(err)
	}
	ns := time.Since(t0).Seconds()
	fmt.Printf("naive  n=%d: %.0f tokens/s (%.3f s for %d×%d tokens, full forward per token)\n", k, float64(B*k)/ns, ns, B, k)
	fmt.Printf("speed-up at n=%d: %.1f×; same tokens: %v\n", k, ns/cs, slices.Equal(short, naive))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sample:", err)
	os.Exit(1)
}
