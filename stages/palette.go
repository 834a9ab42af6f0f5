package stages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/kmeans"
	"github.com/igpt/igpt/pipelines"
)

func init() { Register(paletteStage{}) }

// Output file names of the palette stage.
const (
	PaletteFile   = "palette.msgpack"
	PalettePNG    = "palette.png"
	HistogramFile = "histogram.bin" // kmeans.Counts encoding
	colourParts   = "_colour-parts" // the pipeline's per-shard counts, removed once merged
)

// paletteStage learns the colour palette: an exact colour histogram of the
// training pixels (Beam, per-shard dense counts merged through storage),
// then weighted k-means on it locally. Its memory does not follow the
// data: every process holds dense histograms of 64 MiB (see
// pipelines.Palette and kmeans.FitCounts).
type paletteStage struct{}

func (paletteStage) Name() string { return "palette" }

// Version 2: the histogram is histogram.bin (dense counts, kmeans.Counts'
// encoding) instead of histogram.msgpack; the palette itself is the same
// for the same config (kmeans.FitCounts equals Fit bit for bit).
func (paletteStage) Version() int              { return 2 }
func (paletteStage) Upstream(*Config) []string { return []string{"download"} }
func (paletteStage) Params(cfg *Config) any    { return cfg.Palette }

// PaletteParams tunes the palette stage's k-means.
type PaletteParams struct {
	// K is the number of colours (default 512, the paper's 9-bit palette).
	// When the training pixels have at most K distinct colours (grey
	// datasets have at most 256), the palette is exactly those colours.
	K int `yaml:"k" json:"k"`
	// Seed of the k-means++ seeding.
	Seed uint64 `yaml:"seed" json:"seed"`
	// MaxIter caps Lloyd iterations (default 1000).
	MaxIter int `yaml:"max_iter" json:"max_iter"`
	// Tol stops Lloyd when the squared centre shift falls below tol × the
	// data's variance (scikit-learn's rule; default 1e-5, ten times tighter
	// than scikit-learn's, which reaches a lower error for little time).
	Tol float64 `yaml:"tol" json:"tol"`
	// Split whose pixels are clustered (default train).
	Split string `yaml:"split" json:"split"`
}

func (p *PaletteParams) fillDefaults() {
	if p.K == 0 {
		p.K = 512
	}
	if p.MaxIter == 0 {
		p.MaxIter = kmeans.DefaultMaxIter
	}
	if p.Tol == 0 {
		p.Tol = kmeans.DefaultTol
	}
	if p.Split == "" {
		p.Split = "train"
	}
}

func (ps paletteStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	pc := rc.Config.Palette
	dl := rc.Inputs["download"]
	var shards []pipelines.ShardInput
	for _, f := range dl.Split(pc.Split) {
		shards = append(shards, pipelines.ShardInput{Path: dl.Path(f.Name), Split: f.Split})
	}
	if len(shards) == 0 {
		return nil, fmt.Errorf("palette: download output %s has no %q split to learn colours from (set palette.split)", dl.Dir, pc.Split)
	}
	list := storage.Join(rc.Dir, InputsName)
	if err := pipelines.WriteLines(ctx, list, shards); err != nil {
		return nil, err
	}
	return runJob(ctx, rc, ps, nil, func(s beam.Scope) (beam.PCollection, error) {
		return pipelines.Palette(s, pipelines.PaletteConfig{Shards: list, Parts: storage.Join(rc.Dir, colourParts), Histogram: storage.Join(rc.Dir, HistogramFile)})
	})
}

// Finish learns the palette from the histogram the job wrote (k-means
// runs in the job's finish step) and writes it with its swatch.
func (paletteStage) Finish(ctx context.Context, rc *RunContext, _ json.RawMessage) (*Output, error) {
	pc := rc.Config.Palette
	histPath := storage.Join(rc.Dir, HistogramFile)
	hist, err := pipelines.ReadHistogram(ctx, histPath)
	if err != nil {
		return nil, err
	}
	if err := storage.RemoveAll(ctx, storage.Join(rc.Dir, colourParts)); err != nil {
		return nil, fmt.Errorf("palette: remove the merged parts: %w", err)
	}
	// With in-process workers, their histograms are garbage now: collect
	// them before the k-means allocates, so that the stage's peak is its
	// largest phase, not the pipeline's leftovers plus the k-means.
	pipelines.FreeColourCounts()
	runtime.GC()
	histTime := time.Since(rc.Started)
	distinct := hist.Distinct()
	rc.logger().Info("palette: histogram done", "pixels", hist.Total(), "distinct", distinct, "elapsed", histTime.Round(time.Millisecond))

	start := time.Now()
	pal, err := LearnPalette(hist, pc)
	if err != nil {
		return nil, err
	}
	kmTime := time.Since(start)
	rc.logger().Info("palette: k-means done", "k", pal.K, "iterations", pal.Iterations, "converged", pal.Converged, "mse", pal.MSE, "elapsed", kmTime.Round(time.Millisecond))

	data, err := records.EncodePalette(pal)
	if err != nil {
		return nil, err
	}
	if err := storage.WriteFile(ctx, storage.Join(rc.Dir, PaletteFile), data); err != nil {
		return nil, err
	}
	swatch, err := SwatchPNG(pal)
	if err != nil {
		return nil, err
	}
	if err := storage.WriteFile(ctx, storage.Join(rc.Dir, PalettePNG), swatch); err != nil {
		return nil, err
	}
	histSize, _ := storage.Size(ctx, histPath)
	sum := sha256.Sum256(data)
	return &Output{
		Files: []FileInfo{
			{Name: PaletteFile, Records: int64(pal.K), Bytes: int64(len(data))},
			{Name: PalettePNG, Bytes: int64(len(swatch))},
			{Name: HistogramFile, Records: int64(distinct), Bytes: histSize},
		},
		Meta: map[string]any{
			"k": pal.K, "pixels": pal.Pixels, "distinct_colours": pal.Distinct, "mse_per_pixel": pal.MSE,
			"iterations": pal.Iterations, "converged": pal.Converged, "seed": pal.Seed,
			"histogram_s": histTime.Seconds(), "kmeans_s": kmTime.Seconds(),
			"palette_sha256": hex.EncodeToString(sum[:]),
		},
	}, nil
}

// LearnPalette runs weighted k-means++ and Lloyd over a colour histogram:
// the same optimum as k-means over every pixel. With at most K distinct
// colours the palette is those colours, exactly. Its memory is bounded
// whatever the data (kmeans.FitCounts).
func LearnPalette(hist *kmeans.Counts, pc PaletteParams) (*records.Palette, error) {
	n := hist.Distinct()
	if n == 0 {
		return nil, fmt.Errorf("palette: no pixels to learn from")
	}
	pal := &records.Palette{Pixels: hist.Total(), Distinct: n, Seed: pc.Seed}
	if n <= pc.K {
		x, w := hist.Histogram().Points()
		pal.K, pal.Converged = n, true
		for i := 0; i < n; i++ {
			pal.Centres = append(pal.Centres, [3]float32{x[3*i], x[3*i+1], x[3*i+2]})
			pal.Sizes = append(pal.Sizes, w[i])
		}
		return pal, nil
	}
	res, err := kmeans.FitCounts(hist, kmeans.Options{K: pc.K, Seed: pc.Seed, MaxIter: pc.MaxIter, Tol: pc.Tol})
	if err != nil {
		return nil, fmt.Errorf("palette: k-means: %w", err)
	}
	pal.K = pc.K
	pal.Centres = kmeans.Unflatten3(res.Centres)
	for i := range pal.Centres {
		for c := range pal.Centres[i] {
			pal.Centres[i][c] = min(255, max(0, pal.Centres[i][c]))
		}
	}
	pal.Sizes = res.Sizes
	pal.Inertia = res.Inertia
	pal.MSE = res.FinalInertia / float64(pal.Pixels)
	pal.Iterations, pal.Converged = res.Iterations, res.Converged
	return pal, nil
}

// SwatchPNG draws the palette as a grid of 16×16 cells, 32 per row, sorted
// by luminance.
func SwatchPNG(p *records.Palette) ([]byte, error) {
	const cell, cols = 16, 32
	idx := make([]int, p.K)
	for i := range idx {
		idx[i] = i
	}
	lum := func(c [3]float32) float32 { return 0.299*c[0] + 0.587*c[1] + 0.114*c[2] }
	sort.SliceStable(idx, func(a, b int) bool { return lum(p.Centres[idx[a]]) < lum(p.Centres[idx[b]]) })
	var rows [][]imgproc.Tile
	for n, i := range idx {
		if n%cols == 0 {
			rows = append(rows, nil)
		}
		c := p.Colour(uint16(i))
		rows[len(rows)-1] = append(rows[len(rows)-1], imgproc.Tile{RGB: c[:]})
	}
	for len(rows[0]) < cols { // the canvas is cols cells wide for any k
		rows[0] = append(rows[0], imgproc.Tile{Blank: true})
	}
	return imgproc.Grid{TileH: 1, TileW: 1, Scale: cell, Transparent: true}.PNG(rows)
}

// ReadPalette reads the palette a palette stage wrote, checking it against
// the manifest's checksum.
func ReadPalette(ctx context.Context, m *Manifest) (*records.Palette, []byte, error) {
	path := m.Path(PaletteFile)
	data, err := storage.ReadFile(ctx, path)
	if err != nil {
		return nil, nil, fmt.Errorf("palette %s is missing (%w); rerun: igpt stage palette CONFIG --force", path, err)
	}
	var meta struct {
		SHA256 string `json:"palette_sha256"`
	}
	if err := decodeMeta(m, "palette", &meta); err != nil {
		return nil, nil, err
	}
	if want := meta.SHA256; want != "" {
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != want {
			return nil, nil, fmt.Errorf("palette %s does not match its manifest (sha256 %x, manifest says %s): the file was replaced; rerun: igpt stage palette CONFIG --force", path, sum, want)
		}
	}
	p, err := records.DecodePalette(data, path)
	if err != nil {
		return nil, nil, err
	}
	return p, data, nil
}
