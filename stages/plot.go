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
	p := plot.New()
	p.Title.Text = "iGPT training loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss (nats/token)"
	p.Add(plotter.NewGrid())
	var train, val plotter.XYs
	for _, m := range ms {
		train = append(train, plotter.XY{X: float64(m.Step), Y: m.Loss})
		if m.ValLoss != nil {
			val = append(val, plotter.XY{X: float64(m.Step), Y: *m.ValLoss})
		}
	}
	if len(train) > 0 {
		l, err := plotter.NewLine(train)
		if err != nil {
			return nil, fmt.Errorf("loss plot: %w", err)
		}
		l.Color = plotColor(0)
		p.Add(l)
		p.Legend.Add("train", l)
	}
	if len(val) > 0 {
		l, pts, err := plotter.NewLinePoints(val)
		if err != nil {
			return nil, fmt.Errorf("loss plot: %w", err)
		}
		l.Color, pts.Color = plotColor(1), plotColor(1)
		p.Add(l, pts)
		p.Legend.Add("val", l)
	}
	p.Legend.Top = true
	wt, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return nil, fmt.Errorf("loss plot: %w", err)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("loss plot: %w", err)
	}
	return buf.Bytes(), nil
}

func plotColor(i int) color.RGBA {
	return []color.RGBA{{R: 31, G: 119, B: 180, A: 255}, {R: 214, G: 39, B: 40, A: 255}}[i%2]
}
