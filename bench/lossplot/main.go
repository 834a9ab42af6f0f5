// Command lossplot overlays the validation loss of training runs, for the
// precision parity report (bf16 against fp32) and the recipe experiments:
// each run is a train stage's metrics.jsonl, or a list of step:loss points
// copied from an earlier report when the run's folder is gone.
//
// Usage:
//
//	go run ./bench/lossplot -out cmp.png \
//	    -run bf16=igpt-data/train/KEY/metrics.jsonl \
//	    -points fp32=250:4.844,500:4.623,...
//
// It prints, for every step where the first run has a validation loss, each
// run's loss there and its relative difference from the first run, and the
// last common step's difference; it writes the PNG when -out is set.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/igpt/igpt/stages"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
)

// series is one run's validation loss by step.
type series struct {
	name string
	loss map[int]float64
}

// steps returns the series' steps in order.
func (s series) steps() []int {
	st := make([]int, 0, len(s.loss))
	for k := range s.loss {
		st = append(st, k)
	}
	sort.Ints(st)
	return st
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var runs, points multi
	flag.Var(&runs, "run", "NAME=PATH of a metrics.jsonl (repeatable)")
	flag.Var(&points, "points", "NAME=STEP:LOSS,STEP:LOSS,... (repeatable)")
	out := flag.String("out", "", "write the overlay as a PNG here")
	title := flag.String("title", "validation loss", "plot title")
	flag.Parse()
	var all []series
	for _, src := range []struct {
		args  multi
		parse func(string) (series, error)
	}{{runs, readRun}, {points, parsePoints}} {
		for _, a := range src.args {
			s, err := src.parse(a)
			if err != nil {
				fmt.Fprintln(os.Stderr, "lossplot:", err)
				os.Exit(1)
			}
			all = append(all, s)
		}
	}
	if len(all) == 0 {
		fmt.Fprintln(os.Stderr, "lossplot: give at least one -run or -points")
		os.Exit(2)
	}
	report(all)
	if *out != "" {
		b, err := overlay(*title, all)
		if err == nil {
			err = os.WriteFile(*out, b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lossplot:", err)
			os.Exit(1)
		}
	}
}

// readRun reads NAME=PATH: the val_loss of every line of a metrics.jsonl.
func readRun(arg string) (series, error) {
	name, path, ok := strings.Cut(arg, "=")
	if !ok {
		return series{}, fmt.Errorf("-run %q: want NAME=PATH", arg)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return series{}, fmt.Errorf("-run %s: %w", name, err)
	}
	s := series{name: name, loss: map[int]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		var m struct {
			Step    int      `json:"step"`
			ValLoss *float64 `json:"val_loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return series{}, fmt.Errorf("-run %s: %s line %d: %w", name, path, line, err)
		}
		if m.ValLoss != nil {
			s.loss[m.Step] = *m.ValLoss
		}
	}
	if len(s.loss) == 0 {
		return series{}, fmt.Errorf("-run %s: %s has no val_loss", name, path)
	}
	return s, sc.Err()
}

// parsePoints reads NAME=STEP:LOSS,STEP:LOSS,...
func parsePoints(arg string) (series, error) {
	name, list, ok := strings.Cut(arg, "=")
	if !ok || list == "" {
		return series{}, fmt.Errorf("-points %q: want NAME=STEP:LOSS,...", arg)
	}
	s := series{name: name, loss: map[int]float64{}}
	for _, p := range strings.Split(list, ",") {
		st, l, ok := strings.Cut(p, ":")
		step, err1 := strconv.Atoi(st)
		loss, err2 := strconv.ParseFloat(l, 64)
		if !ok || errors.Join(err1, err2) != nil {
			return series{}, fmt.Errorf("-points %s: bad point %q", name, p)
		}
		s.loss[step] = loss
	}
	return s, nil
}

// report prints the runs side by side at the first run's steps.
func report(all []series) {
	ref := all[0]
	fmt.Printf("%8s", "step")
	for _, s := range all {
		fmt.Printf(" %10s", s.name)
	}
	for _, s := range all[1:] {
		fmt.Printf(" %14s", s.name+"/"+ref.name)
	}
	fmt.Println()
	last := -1
	for _, step := range ref.steps() {
		row := fmt.Sprintf("%8d %10.4f", step, ref.loss[step])
		common := true
		for _, s := range all[1:] {
			if v, ok := s.loss[step]; ok {
				row += fmt.Sprintf(" %10.4f", v)
			} else {
				row += fmt.Sprintf(" %10s", "")
				common = false
			}
		}
		for _, s := range all[1:] {
			if v, ok := s.loss[step]; ok {
				row += fmt.Sprintf(" %+13.2f%%", 100*(v/ref.loss[step]-1))
			} else {
				row += fmt.Sprintf(" %14s", "")
			}
		}
		if common && len(all) > 1 {
			last = step
		}
		if common || len(all) == 1 {
			fmt.Println(row)
		}
	}
	if last >= 0 {
		for _, s := range all[1:] {
			fmt.Printf("last common step %d: %s %.4f, %s %.4f, %+.2f%%\n", last, ref.name, ref.loss[last], s.name, s.loss[last], 100*(s.loss[last]/ref.loss[last]-1))
		}
	}
}

// overlay draws every run's validation loss against the step.
func overlay(title string, all []series) ([]byte, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "val loss (nats/token)"
	p.Add(plotter.NewGrid())
	colours := []color.RGBA{{R: 31, G: 119, B: 180, A: 255}, {R: 214, G: 39, B: 40, A: 255}, {R: 44, G: 160, B: 44, A: 255}, {R: 148, G: 103, B: 189, A: 255}}
	for i, s := range all {
		var xy plotter.XYs
		for _, st := range s.steps() {
			xy = append(xy, plotter.XY{X: float64(st), Y: s.loss[st]})
		}
		l, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", s.name, err)
		}
		c := colours[i%len(colours)]
		l.Color, pts.Color = c, c
		p.Add(l, pts)
		p.Legend.Add(s.name, l)
	}
	p.Legend.Top = true
	return stages.PlotPNG(p)
}
