// Command attention times kernels.AttentionForward + AttentionBackward (the
// fused, flash-attention-style kernels) at a transformer shape and prints
// median milliseconds, for comparison with bench/torch_attention.py.
//
// Usage (build with CGO_ENABLED=0):
//
//	go run ./bench/attention -threads 2 [-B 8 -H 4 -T 1024 -hd 64] [-causal=true] [-iters 10]
//
// Prints: "go attention B8 H4 T1024 hd64 causal threads 2: fwd X ms, bwd Y ms, fwd+bwd Z ms (median of N)"
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"runtime"
	"sort"
	"time"

	"github.com/igpt/igpt/internal/kernels"
)

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func main() {
	threads := flag.Int("threads", 2, "threads (GOMAXPROCS and kernels.SetThreads)")
	B := flag.Int("B", 8, "batch")
	H := flag.Int("H", 4, "heads")
	T := flag.Int("T", 1024, "sequence length")
	hd := flag.Int("hd", 64, "head dimension")
	causal := flag.Bool("causal", true, "causal mask (false: BERT)")
	iters := flag.Int("iters", 10, "timed iterations")
	warmup := flag.Int("warmup", 2, "untimed iterations")
	path := flag.String("path", "", "dispatch path (default: best for this CPU)")
	flag.Parse()
	runtime.GOMAXPROCS(*threads)
	kernels.SetThreads(*threads)
	if *path != "" {
		if _, err := kernels.SetPath(*path); err != nil {
			panic(err)
		}
	}
	C := *H * *hd
	r := rand.New(rand.NewSource(1))
	qkv := make([]float32, *B**T*3*C)
	for i := range qkv {
		qkv[i] = float32(r.NormFloat64())
	}
	dout := make([]float32, *B**T*C)
	for i := range dout {
		dout[i] = float32(r.NormFloat64())
	}
	out := make([]float32, *B**T*C)
	lse := make([]float32, *B**H**T)
	dqkv := make([]float32, len(qkv))
	var fw, bw, tot []float64
	for it := 0; it < *warmup+*iters; it++ {
		t0 := time.Now()
		kernels.AttentionForward(out, lse, qkv, *B, *T, C, *H, *causal)
		t1 := time.Now()
		kernels.AttentionBackward(dqkv, dout, out, lse, qkv, *B, *T, C, *H, *causal)
		t2 := time.Now()
		if it >= *warmup {
			fw = append(fw, t1.Sub(t0).Seconds()*1e3)
			bw = append(bw, t2.Sub(t1).Seconds()*1e3)
			tot = append(tot, t2.Sub(t0).Seconds()*1e3)
		}
	}
	mask := "causal"
	if !*causal {
		mask = "full"
	}
	// FLOPs as executed by dense attention (PyTorch's count): fwd 4·B·H·T²·hd, bwd twice that.
	fl := 4 * float64(*B**H) * float64(*T) * float64(*T) * float64(*hd)
	fmt.Printf("# path %s; dense-equivalent GFLOP/s = 3·4·B·H·T²·hd / time\n", kernels.Path())
	fmt.Printf("go attention B%d H%d T%d hd%d %s threads %d: fwd %.1f ms, bwd %.1f ms, fwd+bwd %.1f ms (median of %d; min %.1f) %.1f GFLOP/s\n",
		*B, *H, *T, *hd, mask, *threads, median(fw), median(bw), median(tot), *iters, minf(tot), 3*fl/median(tot)/1e6)
}

func minf(x []float64) float64 {
	m := x[0]
	for _, v := range x {
		m = min(m, v)
	}
	return m
}
