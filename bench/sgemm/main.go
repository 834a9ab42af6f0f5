// Command sgemm times kernels.Sgemm at the shapes of
// ../shared/bench/sgemm_openblas.c and prints one line per shape in the same
// format:
//
//	name MxNxK ta tb threads GFLOP/s
//
// Usage (build with CGO_ENABLED=0):
//
//	go run ./bench/sgemm -threads 2 [-samples 11] [-path avx512] [-run REGEXP]
//
// Each sample times back-to-back calls for >= 50 ms; the figure is the
// median sample. Two entries of C are checked against a float64 dot product.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"regexp"
	"runtime"
	"sort"
	"time"

	"github.com/igpt/igpt/internal/kernels"
)

type shape struct {
	name    string
	m, n, k int
	ta, tb  bool
}

func shapes() []shape {
	s := []shape{
		{"square1024", 1024, 1024, 1024, false, false},
		{"square2048", 2048, 2048, 2048, false, false},
	}
	const M = 4096
	for d := 256; d <= 512; d *= 2 {
		fw := []struct {
			name    string
			in, out int
		}{{"qkv", d, 3 * d}, {"attnproj", d, d}, {"fc", d, 4 * d}, {"fcproj", 4 * d, d}, {"lmhead", d, 512}}
		for _, f := range fw {
			K, N := f.in, f.out
			s = append(s,
				shape{fmt.Sprintf("d%d.%s", d, f.name), M, N, K, false, false},
				shape{fmt.Sprintf("d%d.%s.dW", d, f.name), K, N, M, true, false},
				shape{fmt.Sprintf("d%d.%s.dX", d, f.name), M, K, N, false, true})
		}
	}
	for T := 256; T <= 1024; T *= 4 {
		s = append(s,
			shape{fmt.Sprintf("attn.T%d.QK^T", T), T, T, 64, false, true},
			shape{fmt.Sprintf("attn.T%d.PV", T), T, 64, T, false, false})
	}
	return s
}

// fill matches sgemm_openblas.c: deterministic values in [-1, 1).
func fill(p []float32, s uint32) {
	for i := range p {
		s = s*1664525 + 1013904223
		p[i] = float32(s>>8)/(1<<23) - 1
	}
}

func main() {
	threads := flag.Int("threads", 1, "threads (sets GOMAXPROCS and kernels.SetThreads)")
	samples := flag.Int("samples", 11, "samples per shape (median reported)")
	path := flag.String("path", "", "dispatch path (default: best for this CPU)")
	run := flag.String("run", "", "only shapes whose name matches this regexp")
	flag.Parse()
	runtime.GOMAXPROCS(*threads)
	kernels.SetThreads(*threads)
	if *path != "" {
		if _, err := kernels.SetPath(*path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	re := regexp.MustCompile(*run)
	fmt.Printf("# igpt kernels.Sgemm; path %s; threads %d; GOMAXPROCS %d; %d samples of >= 50 ms each, median\n",
		kernels.Path(), kernels.Threads(), runtime.GOMAXPROCS(0), *samples)
	fmt.Printf("# name MxNxK ta tb threads GFLOP/s\n")
	g := make([]float64, *samples)
	for i, sh := range shapes() {
		if !re.MatchString(sh.name) {
			continue
		}
		a := make([]float32, sh.m*sh.k)
		b := make([]float32, sh.k*sh.n)
		c := make([]float32, sh.m*sh.n)
		fill(a, uint32(1+i))
		fill(b, uint32(1000+i))
		lda, ldb := sh.k, sh.n
		if sh.ta {
			lda = sh.m
		}
		if sh.tb {
			ldb = sh.k
		}
		gemm := func() { kernels.Sgemm(sh.ta, sh.tb, sh.m, sh.n, sh.k, 1, a, lda, b, ldb, 0, c, sh.n) }
		flops := 2 * float64(sh.m) * float64(sh.n) * float64(sh.k)
		gemm()
		t0 := time.Now()
		gemm()
		one := time.Since(t0).Seconds()
		for _, ij := range [][2]int{{0, 0}, {sh.m - 1, sh.n - 1}} {
			var ref float64
			for p := 0; p < sh.k; p++ {
				x := a[ij[0]*sh.k+p]
				if sh.ta {
					x = a[p*sh.m+ij[0]]
				}
				y := b[p*sh.n+ij[1]]
				if sh.tb {
					y = b[ij[1]*sh.k+p]
				}
				ref += float64(x) * float64(y)
			}
			if e := math.Abs(float64(c[ij[0]*sh.n+ij[1]]) - ref); e > 1e-3*math.Sqrt(float64(sh.k)) {
				fmt.Fprintf(os.Stderr, "%s: wrong result (error %g)\n", sh.name, e)
				os.Exit(1)
			}
		}
		inner := int(0.05/math.Max(one, 1e-7)) + 1
		for r := range g {
			t0 := time.Now()
			for j := 0; j < inner; j++ {
				gemm()
			}
			g[r] = flops * float64(inner) / time.Since(t0).Seconds() / 1e9
		}
		sort.Float64s(g)
		tb := func(t bool) byte {
			if t {
				return 'T'
			}
			return 'N'
		}
		fmt.Printf("%s %dx%dx%d %c %c %d %.1f\n", sh.name, sh.m, sh.n, sh.k, tb(sh.ta), tb(sh.tb), *threads, g[len(g)/2])
	}
}
