package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Baseline names the report knows about.
const (
	// RawPixels names the baseline probe on the images' pixels; the report's
	// summary line states the best layer's margin over it.
	RawPixels = "raw pixels"
	// RandomInitPrefix starts the name of the random-initialisation baseline,
	// "random init / layer k" (see BaselineFromBest).
	RandomInitPrefix = "random init"
	// RawPixelsInput names the raw-pixel baseline at the model's input
	// resolution (PixelFeatures at the token grid's size); the summary
	// states the best layer's margin over it too.
	RawPixelsInput = "raw pixels, input resolution"
)

// Split holds one feature set's train, validation and test matrices and
// labels. The probe fits on train, chooses L2 on validation and reports test.
type Split struct {
	TrainX *Matrix
	TrainY []int
	ValX   *Matrix
	ValY   []int
	TestX  *Matrix
	TestY  []int
}

func (s Split) check(what string) error {
	for _, m := range []struct {
		name string
		x    *Matrix
		y    []int
	}{{"train", s.TrainX, s.TrainY}, {"val", s.ValX, s.ValY}, {"test", s.TestX, s.TestY}} {
		if err := m.x.checkShape(what + " " + m.name); err != nil {
			return err
		}
		if m.x.Rows == 0 {
			return fmt.Errorf("probe: %s %s: no rows", what, m.name)
		}
		if len(m.y) != m.x.Rows {
			return fmt.Errorf("probe: %s %s: %d labels for %d rows", what, m.name, len(m.y), m.x.Rows)
		}
		if m.x.Cols != s.TrainX.Cols {
			return fmt.Errorf("probe: %s %s: %d features, train has %d", what, m.name, m.x.Cols, s.TrainX.Cols)
		}
	}
	return nil
}

// Options controls Layers and Baseline.
type Options struct {
	// Fit is passed to every fit (Init is ignored; each grid is warm-started
	// along its own path).
	Fit FitOptions
	// Standardize fits a Standardizer on each layer's train split and applies
	// it to all three splits (on copies) before fitting.
	Standardize bool
	// Logger receives one Info line per layer; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Row is one probed feature set: a model layer or a baseline.
type Row struct {
	// Layer is the layer index (0 = the input embedding, l = the output of
	// block l); for a baseline, the layer it came from, or -1.
	Layer int `json:"layer"`
	// Name is "embedding", "layer l", or the baseline's name.
	Name     string `json:"name"`
	Baseline bool   `json:"baseline,omitempty"`
	Dim      int    `json:"dim"`
	// Accuracies of the chosen fit.
	ValAcc   float64 `json:"val_acc"`
	TestAcc  float64 `json:"test_acc"`
	TrainAcc float64 `json:"train_acc"`
	// ValLoss is the chosen fit's mean cross-entropy on validation: Best
	// breaks ties in validation accuracy with it, never with test.
	ValLoss float64 `json:"val_loss"`
	// The chosen L2 strength and the equivalent scikit-learn C.
	L2 float64 `json:"l2"`
	C  float64 `json:"c"`
	// GridEdge is "strongest" or "weakest" when the chosen λ is the largest
	// or smallest of the grid fitted: the optimum may lie outside the grid.
	GridEdge   string `json:"grid_edge,omitempty"`
	Iterations int    `json:"iterations"`
	Converged  bool   `json:"converged"`
	// FitSeconds is the chosen fit's time; GridSeconds the whole grid's.
	FitSeconds  float64     `json:"fit_seconds"`
	GridSeconds float64     `json:"grid_seconds"`
	Grid        []GridPoint `json:"grid,omitempty"`
	// Cached names the file a baseline row was reused from, when it was
	// fitted by an earlier run on the same inputs.
	Cached string `json:"cached,omitempty"`
}

// LayerName is "embedding" for layer 0 and "layer l" otherwise.
func LayerName(layer int) string {
	if layer == 0 {
		return "embedding"
	}
	return fmt.Sprintf("layer %d", layer)
}

// Report is the probe's result: one row per model layer, in layer order, and
// baseline rows.
type Report struct {
	Title     string `json:"title,omitempty"`
	Rows      []Row  `json:"rows"`
	Baselines []Row  `json:"baselines,omitempty"`
	// Concat holds probes of concatenated layers (ConcatRow); LowData the
	// low-data probes (LowData).
	Concat  []Row        `json:"concat,omitempty"`
	LowData []LowDataRow `json:"low_data,omitempty"`
	// Images counts the rows of each split the layers were probed on (a
	// max_per_shard sample is not the full split).
	Images *SplitSizes `json:"images,omitempty"`
	Grid   []float64   `json:"grid"` // λ values tried
	// MaxIter is the L-BFGS iteration limit of every fit; Patience the
	// early stop along the grid (FitOptions.Patience; 0: off).
	MaxIter  int `json:"max_iter,omitempty"`
	Patience int `json:"patience,omitempty"`
	// PoolGrid > 1: the features are pooled over a PoolGrid×PoolGrid grid
	// of regions of the token grid, not over all positions.
	PoolGrid int       `json:"pool_grid,omitempty"`
	Created  time.Time `json:"created"`
}

// SplitSizes counts the images of each probe split.
type SplitSizes struct {
	Train int `json:"train"`
	Val   int `json:"val"`
	Test  int `json:"test"`
}

// Sizes counts the rows of each split.
func (s Split) Sizes() SplitSizes {
	return SplitSizes{Train: len(s.TrainY), Val: len(s.ValY), Test: len(s.TestY)}
}

// Layers probes every layer in layers: a fit per grid value λ on the
// layer's train split, λ chosen by validation accuracy (ties to the larger
// λ), test accuracy of that fit reported. Layers run in increasing order;
// each fit uses the kernels' Threads() (GOMAXPROCS by default).
func Layers(layers map[int]Split, grid []float64, opts Options) (*Report, error) {
	return LayersFrom(slices.Sorted(maps.Keys(layers)), func(l int) (Split, error) { return layers[l], nil }, grid, opts)
}

// LayersFrom is Layers over the given layers (in increasing order), each
// loaded by load only when its turn comes and dropped once probed, so
// that a caller reading features from storage holds one layer at a time.
func LayersFrom(layers []int, load func(layer int) (Split, error), grid []float64, opts Options) (*Report, error) {
	if len(layers) == 0 {
		return nil, fmt.Errorf("probe: no layers to probe")
	}
	if !slices.IsSorted(layers) {
		return nil, fmt.Errorf("probe: layers %v are not in increasing order", layers)
	}
	rep := &Report{Grid: append([]float64(nil), grid...), Created: time.Now().UTC(),
		MaxIter: opts.Fit.maxIter(), Patience: max(opts.Fit.Patience, 0)}
	for _, l := range layers {
		s, err := load(l)
		if err != nil {
			return nil, err
		}
		if rep.Images == nil {
			sz := s.Sizes()
			rep.Images = &sz
		}
		row, err := probeOne(l, LayerName(l), s, grid, opts)
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

// Baseline probes one baseline feature set (e.g. RawPixels) like a layer
// and returns its row, marked as a baseline with Layer −1; add it to a report
// with AddBaseline.
func Baseline(name string, s Split, grid []float64, opts Options) (Row, error) {
	row, err := probeOne(-1, name, s, grid, opts)
	if err != nil {
		return Row{}, err
	}
	row.Baseline = true
	return row, nil
}

func probeOne(layer int, name string, s Split, grid []float64, opts Options) (Row, error) {
	what := "probe " + name
	if err := s.check(what); err != nil {
		return Row{}, err
	}
	s, fo, err := prepare(what, s, opts)
	if err != nil {
		return Row{}, err
	}
	sel, err := SelectL2(s.TrainX, s.TrainY, s.ValX, s.ValY, grid, fo)
	if err != nil {
		return Row{}, fmt.Errorf("%s: %w", what, err)
	}
	// The one place the test split is read: the chosen fit's accuracy.
	test, err := sel.Fit.Model.Accuracy(s.TestX, s.TestY)
	if err != nil {
		return Row{}, fmt.Errorf("%s: %w", what, err)
	}
	valLoss, err := sel.Fit.Model.CrossEntropy(s.ValX, s.ValY)
	if err != nil {
		return Row{}, fmt.Errorf("%s: %w", what, err)
	}
	bp := sel.BestPoint()
	row := Row{
		Layer: layer, Name: name, Dim: s.TrainX.Cols,
		ValAcc: bp.ValAcc, TestAcc: test, TrainAcc: bp.TrainAcc, ValLoss: valLoss,
		L2: bp.L2, C: bp.C, GridEdge: gridEdge(sel), Iterations: bp.Iterations, Converged: bp.Converged,
		FitSeconds: bp.FitSeconds, Grid: sel.Points,
	}
	for _, p := range sel.Points {
		row.GridSeconds += p.FitSeconds
	}
	opts.logger().Info("probe: layer done", "name", name, "dim", row.Dim, "val_acc", row.ValAcc,
		"test_acc", row.TestAcc, "l2", row.L2, "iterations", row.Iterations, "converged", row.Converged,
		"grid_seconds", row.GridSeconds)
	return row, nil
}

// gridEdge is "strongest" or "weakest" when the chosen λ is the largest or
// smallest λ fitted (points the grid skipped do not count), else "".
func gridEdge(sel *Selection) string {
	lo, hi := math.Inf(1), math.Inf(-1)
	fitted := 0
	for _, p := range sel.Points {
		if !p.Skipped {
			lo, hi = min(lo, p.L2), max(hi, p.L2)
			fitted++
		}
	}
	switch l2 := sel.BestPoint().L2; {
	case fitted < 2:
		return ""
	case l2 == hi:
		return "strongest"
	case l2 == lo:
		return "weakest"
	}
	return ""
}

// prepare standardises a checked split (on copies) when opts asks for it and
// returns it with the fit options every fit of the probe uses.
func prepare(what string, s Split, opts Options) (Split, FitOptions, error) {
	if opts.Standardize {
		st, err := FitStandardizer(s.TrainX)
		if err != nil {
			return s, FitOptions{}, fmt.Errorf("%s: %w", what, err)
		}
		for _, m := range []**Matrix{&s.TrainX, &s.ValX, &s.TestX} {
			if *m, err = st.Transform(*m); err != nil {
				return s, FitOptions{}, fmt.Errorf("%s: %w", what, err)
			}
		}
	}
	fo := opts.Fit
	fo.Init = nil
	if fo.Classes == 0 {
		fo.Classes = numClasses(s.TrainY, s.ValY, s.TestY)
	}
	if fo.Logger == nil {
		fo.Logger = opts.Logger
	}
	if err := checkData(what+": test", s.TestX, s.TestY, fo.Classes); err != nil {
		return s, FitOptions{}, err
	}
	return s, fo, nil
}

// AddBaseline appends a baseline row (marking it as one).
func (r *Report) AddBaseline(row Row) {
	row.Baseline = true
	r.Baselines = append(r.Baselines, row)
}

// AddConcat appends the row of a concatenation of layers (see ConcatRow).
func (r *Report) AddConcat(row Row) { r.Concat = append(r.Concat, row) }

// AddLowData appends low-data rows (see LowData).
func (r *Report) AddLowData(rows ...LowDataRow) { r.LowData = append(r.LowData, rows...) }

// Best returns the layer row with the highest validation accuracy, ties to
// the lower validation loss, then to the shallower layer; false when there
// are no rows. The choice reads validation only: test accuracy is reported
// for the chosen layer, never used to choose it.
func (r *Report) Best() (Row, bool) {
	if len(r.Rows) == 0 {
		return Row{}, false
	}
	best := r.Rows[0]
	for _, row := range r.Rows[1:] {
		if row.ValAcc > best.ValAcc || (row.ValAcc == best.ValAcc && row.ValLoss < best.ValLoss) {
			best = row
		}
	}
	return best, true
}

// Baseline returns the baseline row with the given name.
func (r *Report) Baseline(name string) (Row, bool) {
	for _, b := range r.Baselines {
		if b.Name == name {
			return b, true
		}
	}
	return Row{}, false
}

// BaselineFromBest turns the best layer of another report (e.g. the probe of a
// randomly initialised model) into a baseline row named "prefix / layer k"
// (e.g. "random init / layer 3"); false when other has no rows.
func BaselineFromBest(prefix string, other *Report) (Row, bool) {
	best, ok := other.Best()
	if !ok {
		return Row{}, false
	}
	best.Name = prefix + " / " + LayerName(best.Layer)
	best.Baseline = true
	return best, true
}

// Summary is the report's headline: the best layer and its margin, in
// accuracy points, over the raw-pixel baseline.
type Summary struct {
	Best Row `json:"best"`
	// MarginOverRawPixels is 100·(best test acc − raw-pixel test acc), or nil
	// without a RawPixels baseline.
	MarginOverRawPixels *float64 `json:"margin_over_raw_pixels_points,omitempty"`
	// MarginOverInputPixels is the same against the RawPixelsInput
	// baseline, or nil without one.
	MarginOverInputPixels *float64 `json:"margin_over_input_pixels_points,omitempty"`
	// LastLayerDrop is 100·(best − last layer) test accuracy points.
	LastLayerDrop float64 `json:"last_layer_drop_points"`
}

// Summary computes the headline; false when there are no layer rows.
func (r *Report) Summary() (Summary, bool) {
	best, ok := r.Best()
	if !ok {
		return Summary{}, false
	}
	s := Summary{Best: best, LastLayerDrop: 100 * (best.TestAcc - r.Rows[len(r.Rows)-1].TestAcc)}
	if raw, ok := r.Baseline(RawPixels); ok {
		m := 100 * (best.TestAcc - raw.TestAcc)
		s.MarginOverRawPixels = &m
	}
	if raw, ok := r.Baseline(RawPixelsInput); ok {
		m := 100 * (best.TestAcc - raw.TestAcc)
		s.MarginOverInputPixels = &m
	}
	return s, true
}

// WriteJSON writes the report, with its summary, as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	type out struct {
		*Report
		Summary *Summary `json:"summary,omitempty"`
	}
	o := out{Report: r}
	if s, ok := r.Summary(); ok {
		o.Summary = &s
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(o); err != nil {
		return fmt.Errorf("probe: write report JSON: %w", err)
	}
	return nil
}

// WriteMarkdown writes the report as a Markdown table (one row per layer,
// then concatenations and baselines), a line naming the best layer and its
// margin over the raw-pixel baselines, the low-data probes' table, and notes
// on cached, cut-short and unconverged fits.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	r.writeIntro(&b)
	// The table: layers (the best in bold), concatenations, baselines.
	b.WriteString("| layer | features | dim | val acc | test acc | train acc | chosen L2 | C | iterations | fit s |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	best, haveBest := r.Best()
	for _, row := range r.Rows {
		name := row.Name
		if haveBest && row.Layer == best.Layer && row.Name == best.Name {
			name = "**" + name + "**"
		}
		writeRow(&b, fmt.Sprint(row.Layer), name, row)
	}
	for _, row := range r.Concat {
		writeRow(&b, "–", row.Name, row)
	}
	for _, row := range r.Baselines {
		writeRow(&b, "–", "baseline: "+row.Name, row)
	}
	r.writeSummary(&b)
	r.writeLowData(&b)
	r.writeNotes(&b)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("probe: write report markdown: %w", err)
	}
	return nil
}

// writeIntro writes the title and the sentence that states the method.
func (r *Report) writeIntro(b *strings.Builder) {
	title := r.Title
	if title == "" {
		title = "Linear probe"
	}
	fmt.Fprintf(b, "# %s\n\n", title)
	pooled := "the mean over positions of norm(h_l)"
	if r.PoolGrid > 1 {
		pooled = fmt.Sprintf("the means of norm(h_l) over each region of a %d×%d grid of the token grid, side by side", r.PoolGrid, r.PoolGrid)
	}
	fmt.Fprintf(b, "Multinomial logistic regression (L-BFGS) on %s; "+
		"L2 strength chosen on validation accuracy from %s", pooled, formatGrid(r.Grid))
	if r.MaxIter > 0 {
		fmt.Fprintf(b, "; at most %d iterations per fit", r.MaxIter)
	}
	if r.Patience > 0 {
		fmt.Fprintf(b, "; each grid, fitted from the strongest λ down, stops after %d λ in a row "+
			"score below the best validation accuracy so far", r.Patience)
	}
	b.WriteString(".")
	if r.Images != nil {
		fmt.Fprintf(b, " Images probed: %d train, %d validation (chooses λ and the best layer), %d test (reported only).",
			r.Images.Train, r.Images.Val, r.Images.Test)
	}
	b.WriteString("\n\n")
}

// writeSummary writes the best layer's line with its margins.
func (r *Report) writeSummary(b *strings.Builder) {
	s, ok := r.Summary()
	if !ok {
		return
	}
	fmt.Fprintf(b, "\nBest layer: %s (layer %d of %d), val acc %s, test acc %s",
		s.Best.Name, s.Best.Layer, r.Rows[len(r.Rows)-1].Layer, pct(s.Best.ValAcc), pct(s.Best.TestAcc))
	margin := func(label, name string, m *float64) {
		raw, _ := r.Baseline(name)
		fmt.Fprintf(b, "; %s the %s baseline (test acc %s)", MarginPhrase(*m), label, pct(raw.TestAcc))
	}
	if s.MarginOverRawPixels != nil {
		margin("raw-pixel", RawPixels, s.MarginOverRawPixels)
	} else {
		b.WriteString("; no raw-pixel baseline")
	}
	if s.MarginOverInputPixels != nil {
		margin(RawPixelsInput, RawPixelsInput, s.MarginOverInputPixels)
	}
	fmt.Fprintf(b, "; %s.\n", LastLayerPhrase(s.LastLayerDrop))
}

// MarginPhrase says where a score sits against a baseline, given m =
// score − baseline in points: "5.6 points above", "2.2 points below", or
// level with it when m rounds to 0.0 (never "-2.2 points over" or "0.0
// points below").
func MarginPhrase(m float64) string {
	switch {
	case math.Round(m*10) == 0:
		return "level with (within 0.05 points)"
	case m > 0:
		return fmt.Sprintf("%.1f points above", m)
	}
	return fmt.Sprintf("%.1f points below", -m)
}

// LastLayerPhrase says where the last layer's test accuracy sits against the
// best layer's, given drop = 100·(best − last) points: "below it", "above it
// (on test)", or level with it when the gap rounds to 0.0.
func LastLayerPhrase(drop float64) string {
	switch m := MarginPhrase(-drop); {
	case math.Round(drop*10) == 0:
		return "the last layer is level with it (within 0.05 points)"
	case drop < 0:
		return "the last layer is " + m + " it (on test)"
	default:
		return "the last layer is " + m + " it"
	}
}

// writeLowData writes the low-data probes' table, one row per feature set
// and size: "low-data k/class" with the mean ± std test accuracy.
func (r *Report) writeLowData(b *strings.Builder) {
	if len(r.LowData) == 0 {
		return
	}
	b.WriteString("\nLow-data probes: k labelled train images per class, seeded draws, L2 chosen on the full validation split.\n\n")
	b.WriteString("| probe | features | draws | test acc mean ± std | chosen L2 per draw |\n|---|---|---|---|---|\n")
	for _, row := range r.LowData {
		l2 := make([]string, len(row.L2))
		for i, v := range row.L2 {
			l2[i] = fmt.Sprintf("%.3g", v)
		}
		fmt.Fprintf(b, "| low-data %d/class | %s | %d | %s ± %.2f | %s |\n",
			row.PerClass, row.Name, row.Draws, pct(row.Mean), 100*row.Std, strings.Join(l2, ", "))
	}
}

// writeNotes writes the notes on reused baselines, grids cut short and fits
// that did not converge.
func (r *Report) writeNotes(b *strings.Builder) {
	for _, row := range r.Baselines {
		if row.Cached != "" {
			fmt.Fprintf(b, "\nBaseline %q was fitted by an earlier run on the same images, splits and settings; "+
				"its row (fit times included) is reused from %s.\n", row.Name, row.Cached)
		}
	}
	all := slices.Concat(r.Rows, r.Concat, r.Baselines)
	for _, row := range all {
		var skipped []string
		for _, p := range row.Grid {
			if p.Skipped {
				skipped = append(skipped, fmt.Sprintf("%g", p.L2))
			}
		}
		if len(skipped) > 0 {
			fmt.Fprintf(b, "\n%s: grid stopped early, λ ∈ {%s} not fitted.\n", row.Name, strings.Join(skipped, ", "))
		}
	}
	var edges []string
	for _, row := range all {
		if row.GridEdge != "" {
			edges = append(edges, fmt.Sprintf("%s (λ = %g, the %s)", row.Name, row.L2, row.GridEdge))
		}
	}
	if len(edges) > 0 {
		fmt.Fprintf(b, "\nλ chosen at the edge of the grid, so the best λ may lie outside it: %s; widen probe.l2 to check.\n",
			strings.Join(edges, ", "))
	}
	var unconverged []string
	for _, row := range all {
		if !row.Converged {
			unconverged = append(unconverged, row.Name)
		}
	}
	if len(unconverged) > 0 {
		fmt.Fprintf(b, "\nNot converged at the iteration limit: %s.\n", strings.Join(unconverged, ", "))
	}
}

func writeRow(b *strings.Builder, layer, name string, row Row) {
	fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %s | %.3g | %.3g | %d | %.2f |\n",
		layer, name, row.Dim, pct(row.ValAcc), pct(row.TestAcc), pct(row.TrainAcc), row.L2, row.C, row.Iterations, row.FitSeconds)
}

func pct(a float64) string { return fmt.Sprintf("%.2f%%", 100*a) }

func formatGrid(g []float64) string {
	if len(g) == 0 {
		return "(no grid)"
	}
	parts := make([]string, len(g))
	for i, v := range g {
		parts[i] = fmt.Sprintf("%g", v)
	}
	return "λ ∈ {" + strings.Join(parts, ", ") + "}"
}
