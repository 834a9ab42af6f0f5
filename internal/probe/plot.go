package probe

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Figure size of PlotPNG: the axes, and a legend column on their right.
const (
	plotWidth   = 8 * vg.Inch
	plotHeight  = 4.5 * vg.Inch
	legendWidth = 2.1 * vg.Inch
)

var (
	valColour  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // blue
	testColour = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff} // red
	baseColour = []color.Color{
		color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}, // grey
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // purple
		color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
	}
)

// Plot builds the accuracy-against-depth figure: validation and test accuracy
// (percent) of every layer row against its layer index, and one horizontal
// dashed line per baseline at its test accuracy. The legend is returned
// separately, to be drawn beside the axes rather than over the curves.
func (r *Report) Plot() (*plot.Plot, plot.Legend, error) {
	legend := plot.NewLegend()
	if len(r.Rows) == 0 {
		return nil, legend, fmt.Errorf("probe: plot: report has no layer rows")
	}
	p := plot.New()
	p.Title.Text = r.Title
	if p.Title.Text == "" {
		p.Title.Text = "Linear probe accuracy by layer"
	}
	p.X.Label.Text = "layer (0 = embedding)"
	p.Y.Label.Text = "accuracy (%)"
	p.Add(plotter.NewGrid())

	val := make(plotter.XYs, len(r.Rows))
	test := make(plotter.XYs, len(r.Rows))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, row := range r.Rows {
		val[i] = plotter.XY{X: float64(row.Layer), Y: 100 * row.ValAcc}
		test[i] = plotter.XY{X: float64(row.Layer), Y: 100 * row.TestAcc}
		lo = math.Min(lo, math.Min(val[i].Y, test[i].Y))
		hi = math.Max(hi, math.Max(val[i].Y, test[i].Y))
	}
	xmin, xmax := val[0].X, val[len(val)-1].X
	for i, s := range []struct {
		name string
		xys  plotter.XYs
		c    color.Color
	}{{"validation", val, valColour}, {"test", test, testColour}} {
		l, pts, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return nil, legend, fmt.Errorf("probe: plot %s: %w", s.name, err)
		}
		l.Color = s.c
		l.Width = vg.Points(1.5)
		pts.Color = s.c
		pts.Shape = draw.CircleGlyph{}
		if i == 1 {
			pts.Shape = draw.SquareGlyph{}
		}
		pts.Radius = vg.Points(2.5)
		p.Add(l, pts)
		legend.Add(s.name, l, pts)
	}
	for i, b := range r.Baselines {
		y := 100 * b.TestAcc
		l, err := plotter.NewLine(plotter.XYs{{X: xmin - 0.3, Y: y}, {X: xmax + 0.3, Y: y}})
		if err != nil {
			return nil, legend, fmt.Errorf("probe: plot baseline %s: %w", b.Name, err)
		}
		l.Color = baseColour[i%len(baseColour)]
		l.Width = vg.Points(1.2)
		l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		p.Add(l)
		legend.Add(fmt.Sprintf("%s (test)", b.Name), l)
		lo, hi = math.Min(lo, y), math.Max(hi, y)
	}
	span := math.Max(hi-lo, 1)
	p.Y.Min = math.Max(0, lo-0.1*span)
	p.Y.Max = math.Min(100, hi+0.1*span)
	p.X.Min, p.X.Max = xmin-0.5, xmax+0.5
	p.X.Tick.Marker = layerTicks(r.Rows)
	legend.Top = true
	legend.Left = true
	legend.TextStyle.Font.Size = vg.Points(10)
	return p, legend, nil
}

// layerTicks labels the layers, thinning the labels to at most ~25.
func layerTicks(rows []Row) plot.ConstantTicks {
	step := (len(rows) + 24) / 25
	var ticks plot.ConstantTicks
	for i, row := range rows {
		t := plot.Tick{Value: float64(row.Layer)}
		if i%step == 0 || i == len(rows)-1 {
			t.Label = fmt.Sprint(row.Layer)
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// PlotPNG renders the figure of Plot, legend to the right of the axes, as an
// 8×4.5 inch PNG to w.
func (r *Report) PlotPNG(w io.Writer) error {
	p, legend, err := r.Plot()
	if err != nil {
		return err
	}
	img := vgimg.New(plotWidth, plotHeight)
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, -legendWidth, 0, 0))
	legend.Draw(draw.Crop(dc, plotWidth-legendWidth+vg.Points(8), 0, 0, -vg.Points(24)))
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("probe: plot: write PNG: %w", err)
	}
	return nil
}

// SavePNG writes the PNG of PlotPNG to path.
func (r *Report) SavePNG(path string) error {
	var buf bytes.Buffer
	if err := r.PlotPNG(&buf); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("probe: plot: %w", err)
	}
	return nil
}
