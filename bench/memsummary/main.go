// Command memsummary summarises bench/memory.sh output: for every stage and
// mode, the median peak of the launcher and of the largest worker at each
// dataset size over the passes given, the ratio of the largest size's
// median to the smallest's, and the same ratio by the largest peaks. Peak
// RSS moves with when Go's collector runs, by several percent between two
// passes of one size, so the rule (largest process under 2 GiB, growth
// under 10%) is read on medians of several passes, and the largest peaks
// are printed beside them.
//
//	bench/memory.sh … > pass1.txt; bench/memory.sh … > pass2.txt; …
//	go run ./bench/memsummary pass1.txt pass2.txt pass3.txt
//
// With no file it reads standard input (memory.sh with PASSES=N pipes its
// rows here).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
)

// limitMiB and growth are the rule's bounds.
const (
	limitMiB = 2048
	growth   = 1.10
)

type key struct{ stage, mode string }

// peaks are one stage and mode's peaks in MiB by dataset size, one per pass.
type peaks struct {
	launcher, worker map[int][]float64
}

var md = flag.Bool("md", false, "print a Markdown table")

func main() {
	flag.Parse()
	var order []key
	all := map[key]*peaks{}
	read := func(r io.Reader, name string) {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 5 || strings.HasPrefix(f[0], "#") || f[0] == "stage" {
				continue
			}
			n, err1 := strconv.Atoi(f[1])
			l, err2 := strconv.ParseFloat(f[3], 64)
			w, err3 := strconv.ParseFloat(f[4], 64)
			if err1 != nil || err2 != nil || err3 != nil {
				continue // not a row: a log line memory.sh passed through
			}
			k := key{f[0], f[2]}
			p := all[k]
			if p == nil {
				p = &peaks{launcher: map[int][]float64{}, worker: map[int][]float64{}}
				all[k] = p
				order = append(order, k)
			}
			p.launcher[n] = append(p.launcher[n], l)
			p.worker[n] = append(p.worker[n], w)
		}
		if err := sc.Err(); err != nil {
			log.Fatalf("memsummary: read %s: %v", name, err)
		}
	}
	if flag.NArg() == 0 {
		read(os.Stdin, "standard input")
	}
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err != nil {
			log.Fatalf("memsummary: %v", err)
		}
		read(f, name)
		f.Close()
	}
	if *md {
		fmt.Println("| stage | mode | process | median peak, MiB (every pass) per size | ratio of medians | ratio of largest | rule |")
		fmt.Println("|---|---|---|---|---|---|---|")
	} else {
		fmt.Printf("# medians over passes (every pass in brackets), MiB; ratio = largest size / smallest; rule: < %d MiB and ratio < %.2f\n", limitMiB, growth)
		fmt.Printf("%-15s %-17s %-8s %-40s %-7s %-7s %s\n", "stage", "mode", "process", "median (passes) per size", "ratio", "by_max", "rule")
	}
	failed := 0
	for _, k := range order {
		p := all[k]
		for _, proc := range []struct {
			name string
			m    map[int][]float64
		}{{"launcher", p.launcher}, {"worker", p.worker}} {
			cells, ratio, byMax, ok, skip := summarise(proc.m)
			if skip {
				continue
			}
			verdict := "ok"
			if !ok {
				verdict, failed = "FAILS", failed+1
			}
			if *md {
				fmt.Printf("| %s | %s | %s | %s | %.2f | %.2f | %s |\n", k.stage, k.mode, proc.name, strings.Join(cells, " · "), ratio, byMax, verdict)
			} else {
				fmt.Printf("%-15s %-17s %-8s %-40s %-7.2f %-7.2f %s\n", k.stage, k.mode, proc.name, strings.Join(cells, " "), ratio, byMax, verdict)
			}
		}
	}
	if failed > 0 {
		fmt.Printf("# %d of the stages' processes break the rule by the medians\n", failed)
	}
}

// summarise gives one process's peaks by size (the median, every pass in
// brackets), the ratio of the largest size's median to the smallest's and
// of their largest peaks; ok is the rule on the medians; skip is set when
// the process never ran (a stage with no workers reports 0).
func summarise(m map[int][]float64) (cells []string, ratio, byMax float64, ok, skip bool) {
	sizes := make([]int, 0, len(m))
	for n := range m {
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	var med, mx []float64
	for _, n := range sizes {
		v := m[n]
		mdn, x := median(v), slices.Max(v)
		med, mx = append(med, mdn), append(mx, x)
		cells = append(cells, fmt.Sprintf("%g(%s)", mdn, join(v)))
	}
	if slices.Max(mx) == 0 {
		return nil, 0, 0, true, true
	}
	ratio, byMax = med[len(med)-1]/med[0], mx[len(mx)-1]/mx[0]
	ok = ratio < growth && slices.Max(mx) < limitMiB
	return cells, ratio, byMax, ok, false
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func join(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'g', -1, 64)
	}
	return strings.Join(s, "/")
}
