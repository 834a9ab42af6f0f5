package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/kmeans"
	"github.com/vmihailenco/msgpack/v5"
)

func init() {
	beam.RegisterType(reflect.TypeOf((*kmeans.Histogram)(nil)).Elem())
	register.DoFn3x1[context.Context, string, func(records.Image), error](&ReadImagesFn{})
	register.Combiner3[*kmeans.Histogram, records.Image, *kmeans.Histogram](&HistogramFn{})
	register.DoFn3x1[context.Context, *kmeans.Histogram, func(string), error](&WriteHistogramFn{})
	register.Emitter1[records.Image]()
}

// PaletteConfig is the palette pipeline's input.
type PaletteConfig struct {
	// Shards is a file of ShardInput JSON lines (WriteLines): the Image
	// shards to count, the training split.
	Shards    string
	Histogram string // where to write the colour histogram (msgpack)
}

// Palette builds the exact colour histogram of every pixel of the given
// Image shards with a Beam combine and writes it to cfg.Histogram. The
// k-means that turns it into a palette needs only the distinct colours and
// their counts: it runs after the histogram is written (in the job's
// finish step, stages/finish.go). It returns the histogram's path, a
// single-element PCollection of string that exists only once the file is
// written.
func Palette(s beam.Scope, cfg PaletteConfig) (beam.PCollection, error) {
	if cfg.Shards == "" {
		return beam.PCollection{}, fmt.Errorf("pipelines: palette: no shard list to read")
	}
	s = s.Scope("palette")
	paths := beam.Reshuffle(s.Scope("SpreadShards"), CreateFromFile(s.Scope("ListShards"), cfg.Shards))
	imgs := beam.ParDo(s.Scope("ReadImages"), &ReadImagesFn{}, paths)
	hist := beam.Combine(s.Scope("Histogram"), &HistogramFn{}, imgs)
	return beam.ParDo(s.Scope("WriteHistogram"), &WriteHistogramFn{Path: cfg.Histogram}, hist), nil
}

// ReadImagesFn emits every Image record of one shard.
type ReadImagesFn struct{}

// ProcessElement reads one shard.
func (f *ReadImagesFn) ProcessElement(ctx context.Context, input string, emit func(records.Image)) error {
	var in ShardInput
	if err := json.Unmarshal([]byte(input), &in); err != nil {
		return fmt.Errorf("palette: bad input %q: %w", input, err)
	}
	return records.ScanFile(ctx, in.Path, func(img records.Image) error { emit(img); return nil })
}

// HistogramFn counts the distinct RGB colours of images (grey images count
// as r = g = b).
type HistogramFn struct{}

// CreateAccumulator starts an empty histogram.
func (f *HistogramFn) CreateAccumulator() *kmeans.Histogram { return &kmeans.Histogram{} }

// AddInput counts one image's pixels.
func (f *HistogramFn) AddInput(h *kmeans.Histogram, img records.Image) (*kmeans.Histogram, error) {
	rgb, err := imgproc.ToRGB(img.Pix, img.C)
	if err != nil {
		return nil, fmt.Errorf("palette: image %s: %w", img.Key, err)
	}
	return h, h.Add(rgb)
}

// MergeAccumulators adds b's counts into a.
func (f *HistogramFn) MergeAccumulators(a, b *kmeans.Histogram) (*kmeans.Histogram, error) {
	return a, a.Merge(b)
}

// ExtractOutput returns the compacted histogram.
func (f *HistogramFn) ExtractOutput(h *kmeans.Histogram) *kmeans.Histogram {
	h.Compact()
	return h
}

// WriteHistogramFn writes the final histogram with msgpack and emits its
// path once written.
type WriteHistogramFn struct{ Path string }

// ProcessElement writes the histogram once.
func (f *WriteHistogramFn) ProcessElement(ctx context.Context, h *kmeans.Histogram, emit func(string)) error {
	b, err := msgpack.Marshal(h)
	if err != nil {
		return fmt.Errorf("palette: encode histogram: %w", err)
	}
	if err := storage.WriteFile(ctx, f.Path, b); err != nil {
		return err
	}
	emit(f.Path)
	return nil
}

// ReadHistogram reads a histogram written by the palette pipeline.
func ReadHistogram(ctx context.Context, path string) (*kmeans.Histogram, error) {
	b, err := storage.ReadFile(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("palette: the pipeline finished without writing %s: %w", path, err)
	}
	var h kmeans.Histogram
	if err := msgpack.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("palette: %s: %w", path, err)
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("palette: %s: %w", path, err)
	}
	return &h, nil
}
