package stages

import (
	"bytes"
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// LossPlot draws training and validation loss (nats per token) against
// the optimiser step as a PNG.
func LossPlot(ms []Metric) ([]byte, error) {
	var train, val plotter.XYs
	for _, m := range ms {
		train = append(train, plotter.XY{X: float64(m.Step), Y: m.Loss})
		if m.ValLoss != nil {
			val = append(val, plotter.XY{X: float64(m.Step), Y: *m.ValLoss})
		}
	}
	b, err := trainEvalPlot("iGPT training loss", "loss (nats/token)", "train", train, "val", val, legendTop)
	if err != nil {
		return nil, fmt.Errorf("loss plot: %w", err)
	}
	return b, nil
}

// Where trainEvalPlot puts its legend: in the top right corner for a
// falling curve (a loss), the bottom right for a rising one (an accuracy),
// the corner the curves leave empty.
const (
	legendTop    = true
	legendBottom = false
)

// trainEvalPlot draws a training series as a line and an evaluation series
// as a line with points, against the step, as an 8×5-inch PNG, with the
// legend at the top or bottom right (legendTop, legendBottom).
func trainEvalPlot(title, yLabel, trainName string, train plotter.XYs, evalName string, eval plotter.XYs, top bool) ([]byte, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = yLabel
	p.Add(plotter.NewGrid())
	if len(train) > 0 {
		l, err := plotter.NewLine(train)
		if err != nil {
			return nil, err
		}
		l.Color = plotColor(0)
		p.Add(l)
		p.Legend.Add(trainName, l)
	}
	if len(eval) > 0 {
		l, pts, err := plotter.NewLinePoints(eval)
		if err != nil {
			return nil, err
		}
		l.Color, pts.Color = plotColor(1), plotColor(1)
		p.Add(l, pts)
		p.Legend.Add(evalName, l)
	}
	p.Legend.Top = top
	return PlotPNG(p)
}

// PlotPNG renders p as an 8×5-inch PNG, the size of every plot igpt
// draws (bench/lossplot's too).
func PlotPNG(p *plot.Plot) ([]byte, error) {
	wt, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func plotColor(i int) color.RGBA {
	return []color.RGBA{{R: 31, G: 119, B: 180, A: 255}, {R: 214, G: 39, B: 40, A: 255}}[i%2]
}
