// Command trainstep times a full iGPT training step of package model
// (forward + loss + backward + Adam β=(0.9, 0.95)) and a forward pass with
// loss, in float32 on the CPU, for comparison with
// ../shared/bench/torch_train_step.py (same flags, same output lines, same
// FLOP count).
//
// Usage (build with CGO_ENABLED=0; bench/trainstep_vs_torch.sh runs both):
//
//	go run ./bench/trainstep -threads 2 -layers 4 -d 256 -heads 8 -seq 256 -vocab 512 \
//	    -batch 8 -fwd-batch 32 -steps 10 -warmup 3 [-objective bert] [-breakdown]
//
// FLOPs per token as torch_train_step.py counts them (dense attention, the
// causal half not subtracted): N = L·12d² + dV, fwd = 2N + 4LTd, train =
// 3·fwd. Prints (greppable):
//
//	config: …
//	flops/token: train XM fwd YM
//	train ms/step: MEDIAN (min A, max B, n STEPS)
//	train tokens/s: X
//	train GFLOP/s: X
//	train fraction: peak P, sgemm S     (model GFLOP/s over the peak and over -sgemm-gflops)
//	train cpu ms/step: MEDIAN (min A, …) (process CPU time per step, unix)
//	train last_loss: X
//	fwd ms/batch / fwd tokens/s / fwd GFLOP/s / fwd fraction
//
// The peak is -peak-gflops, or, when 0, threads × -flops-per-cycle × the
// clock rate measured by a dependent-instruction loop (an estimate).
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/model"
)

func main() {
	threads := flag.Int("threads", 2, "threads (GOMAXPROCS and kernels.SetThreads)")
	layers := flag.Int("layers", 4, "L")
	d := flag.Int("d", 256, "width")
	heads := flag.Int("heads", 8, "heads")
	seq := flag.Int("seq", 256, "T")
	vocab := flag.Int("vocab", 512, "V")
	batch := flag.Int("batch", 8, "training batch (0: skip training)")
	fwdBatch := flag.Int("fwd-batch", 32, "forward batch (0: skip)")
	steps := flag.Int("steps", 10, "timed training steps")
	stepsFwd := flag.Int("steps-fwd", -1, "timed forward batches (default: -steps)")
	warmup := flag.Int("warmup", 3, "untimed iterations")
	objective := flag.String("objective", "ar", "ar or bert")
	lr := flag.Float64("lr", 3e-4, "learning rate")
	seed := flag.Uint64("seed", 0, "seed")
	breakdown := flag.Bool("breakdown", false, "also print forward / backward / optimizer medians of the training step")
	peak := flag.Float64("peak-gflops", 0, "peak GFLOP/s of the threads used (0: estimate from the clock)")
	fpc := flag.Float64("flops-per-cycle", 32, "fp32 FLOPs per cycle per core for the peak estimate (Zen 4 AVX-512: 32)")
	sgemm := flag.Float64("sgemm-gflops", 0, "an SGEMM rate to compare with (e.g. OpenBLAS at these shapes; 0: not printed)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the timed part to this file")
	precision := flag.String("precision", "fp32", "fp32 or bf16: the training step's linear layers (model.Precision); the forward pass is fp32")
	flag.Parse()

	runtime.GOMAXPROCS(*threads)
	kernels.SetThreads(*threads)
	obj, err := model.ParseObjective(*objective)
	if err != nil {
		fail(err)
	}
	prec, err := model.ParsePrecision(*precision)
	if err != nil {
		fail(err)
	}
	if err := prec.Check(); err != nil {
		fail(err)
	}
	cfg := model.Config{Layers: *layers, D: *d, Heads: *heads, Seq: *seq, Vocab: *vocab}
	m, err := model.New(cfg)
	if err != nil {
		fail(err)
	}
	m.Precision = prec
	m.Params.Init(*seed)
	// a non-zero head, as torch_train_step.py (whose init draws it N(0, 0.02))
	r := rand.New(rand.NewPCG(*seed, 1))
	for i := range m.Params.LMHead {
		m.Params.LMHead[i] = float32(0.02 * r.NormFloat64())
	}
	fwdF, trainF := cfg.FLOPsPerToken(*seq)
	ghz := 0.0
	if *peak == 0 {
		ghz = clockGHz()
		*peak = ghz * *fpc * float64(*threads)
	}
	fmt.Printf("# igpt model, kernels path %s, precision %s (bf16 kernels %s), GOMAXPROCS=%d kernels.Threads()=%d, peak %.0f GFLOP/s", kernels.Path(),
		prec, kernels.BF16Path(), runtime.GOMAXPROCS(0), kernels.Threads(), *peak)
	if ghz > 0 {
		fmt.Printf(" (estimated: %.2f GHz × %g FLOP/cycle × %d threads)", ghz, *fpc, *threads)
	}
	fmt.Println()
	fmt.Printf("config: L=%d d=%d H=%d T=%d V=%d objective=%s precision=%s batch=%d fwd_batch=%d threads=%d params=%d matmul_params=%d\n",
		cfg.Layers, cfg.D, cfg.Heads, cfg.Seq, cfg.Vocab, obj, prec, *batch, *fwdBatch, *threads, cfg.NumParams(), cfg.MatmulParams())
	fmt.Printf("flops/token: train %.3fM fwd %.3fM\n", trainF/1e6, fwdF/1e6)

	batchOf := func(B int) ([]int32, []bool) {
		x := make([]int32, B**seq)
		for i := range x {
			x[i] = int32(r.IntN(*vocab))
		}
		var mask []bool
		if obj == model.BERT {
			mask = model.BERTMask(r, B, *seq, model.BERTMaskProb)
		}
		return x, mask
	}
	report := func(kind, unit string, times []float64, tokens int, flops float64) {
		med := median(times)
		fmt.Printf("%s %s: %.1f (min %.1f, max %.1f, n %d)\n", kind, unit, med*1e3, minf(times)*1e3, maxf(times)*1e3, len(times))
		fmt.Printf("%s tokens/s: %.0f\n", kind, float64(tokens)/med)
		gf := float64(tokens) * flops / med / 1e9
		fmt.Printf("%s GFLOP/s: %.1f\n", kind, gf)
		fmt.Printf("%s fraction: peak %.2f", kind, gf / *peak)
		if *sgemm > 0 {
			fmt.Printf(", sgemm %.2f (of %.1f GFLOP/s)", gf / *sgemm, *sgemm)
		}
		fmt.Println()
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *batch > 0 && *steps > 0 {
		opt, err := model.NewOptimizer(cfg)
		if err != nil {
			fail(err)
		}
		x, mask := batchOf(*batch)
		if err := m.Reserve(*batch, *seq); err != nil {
			fail(err)
		}
		m.AllocGrads()
		var times, tf, tb, to, cpu []float64
		var loss float64
		for i := 0; i < *warmup+*steps; i++ {
			c0 := cpuSeconds()
			t0 := time.Now()
			m.Grads.Zero()
			loss, err = m.Forward(x, mask, obj)
			if err != nil {
				fail(err)
			}
			t1 := time.Now()
			if err := m.Backward(); err != nil {
				fail(err)
			}
			t2 := time.Now()
			if _, err := opt.Update(m.Params, m.Grads, *lr); err != nil {
				fail(err)
			}
			t3 := time.Now()
			if i >= *warmup {
				cpu = append(cpu, cpuSeconds()-c0)
				times = append(times, t3.Sub(t0).Seconds())
				tf = append(tf, t1.Sub(t0).Seconds())
				tb = append(tb, t2.Sub(t1).Seconds())
				to = append(to, t3.Sub(t2).Seconds())
			}
		}
		report("train", "ms/step", times, *batch**seq, trainF)
		if cpu[0] >= 0 {
			// CPU time is what a shared machine's load does not inflate
			// (much): compare precisions by it where the wall clock is noisy.
			fmt.Printf("train cpu ms/step: %.1f (min %.1f, all threads; spin-waits included)\n", median(cpu)*1e3, minf(cpu)*1e3)
		}
		if *breakdown {
			fmt.Printf("train breakdown ms: zero+forward %.1f, backward %.1f, clip-norm+adam %.1f\n",
				median(tf)*1e3, median(tb)*1e3, median(to)*1e3)
		}
		fmt.Printf("train last_loss: %.4f\n", loss)
	}

	nf := *steps
	if *stepsFwd >= 0 {
		nf = *stepsFwd
	}
	if *fwdBatch > 0 && nf > 0 {
		x, mask := batchOf(*fwdBatch)
		var times []float64
		for i := 0; i < *warmup+nf; i++ {
			t0 := time.Now()
			if _, _, err := m.Evaluate(x, mask, obj); err != nil {
				fail(err)
			}
			if i >= *warmup {
				times = append(times, time.Since(t0).Seconds())
			}
		}
		report("fwd", "ms/batch", times, *fwdBatch**seq, fwdF)
	}
}

// clockGHz estimates the core clock: a chain of dependent shift+xor pairs
// takes 2 cycles per iteration; the best of several 20 ms runs.
func clockGHz() float64 {
	best := 0.0
	x := uint64(1)
	for rep := 0; rep < 10; rep++ {
		const n = 20_000_000
		t0 := time.Now()
		for i := 0; i < n; i++ {
			x = x<<1 ^ x
		}
		g := 2 * n / time.Since(t0).Seconds() / 1e9
		best = max(best, g)
	}
	sink = x
	return best
}

var sink uint64

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minf(x []float64) float64 {
	m := x[0]
	for _, v := range x {
		m = min(m, v)
	}
	return m
}

func maxf(x []float64) float64 {
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	return m
}

func fail(err error) {
	pprof.StopCPUProfile()
	fmt.Fprintln(os.Stderr, "trainstep:", err)
	os.Exit(1)
}
