package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/kmeans"
)

func init() {
	register.DoFn3x1[context.Context, string, func(string), error](&CountColoursFn{})
	register.DoFn4x1[context.Context, int, func(*string) bool, func(string), error](&MergeColoursFn{})
	register.Iter1[string]()
}

// PaletteConfig is the palette pipeline's input.
type PaletteConfig struct {
	// Shards is a file of ShardInput JSON lines (WriteLines): the Image
	// shards to count, the training split.
	Shards string
	// Parts is the folder where each input shard's colour counts are
	// written (ColourPartName) before they are merged; the caller removes
	// it once the histogram is read.
	Parts     string
	Histogram string // where to write the merged colour counts (kmeans.Counts encoding)
}

// ColourPartName names the colour counts of the idx-th input shard.
func ColourPartName(idx int) string { return fmt.Sprintf("colours-%05d.bin", idx) }

// Palette builds the exact colour histogram of every pixel of the given
// Image shards and writes it to cfg.Histogram. The k-means that turns it
// into a palette runs in the driver (kmeans.FitCounts).
//
// Memory does not follow the data: each worker counts one input shard at
// a time into a dense kmeans.Counts (64 MiB, at most GOMAXPROCS of them
// per process) and writes it to storage as one part; one worker then adds
// the parts, streamed one at a time, into one more Counts. Only file names
// cross a shuffle (a Beam combine of the histograms would send a partial
// histogram per bundle through it, which prism holds in memory), and a
// retried shard rewrites the same part. It returns a single-element
// PCollection of the histogram's summary (JSON of ColourSummary).
func Palette(s beam.Scope, cfg PaletteConfig) (beam.PCollection, error) {
	if cfg.Shards == "" {
		return beam.PCollection{}, fmt.Errorf("pipelines: palette: no shard list to read")
	}
	if cfg.Parts == "" || cfg.Histogram == "" {
		return beam.PCollection{}, fmt.Errorf("pipelines: palette: no folder for the colour counts")
	}
	s = s.Scope("palette")
	tasks := beam.Reshuffle(s.Scope("SpreadShards"), indexed(s.Scope("ListShards"), cfg.Shards))
	parts := beam.ParDo(s.Scope("CountColours"), &CountColoursFn{Dir: cfg.Parts}, tasks)
	all := beam.GroupByKey(s.Scope("CollectParts"), beam.AddFixedKey(s, parts))
	return beam.ParDo(s.Scope("MergeColours"), &MergeColoursFn{Path: cfg.Histogram}, all), nil
}

// ColourSummary describes a written histogram.
type ColourSummary struct {
	Parts    int    `json:"parts"`
	Distinct int    `json:"distinct"`
	Pixels   uint64 `json:"pixels"`
	Bytes    int64  `json:"bytes"`
}

// countSlots bounds the dense histograms a worker process holds at once:
// one per core, whatever the number of bundles the SDK runs together.
// Idle ones are kept for the next shard until FreeColourCounts.
var (
	countSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	countMu    sync.Mutex
	countFree  []*kmeans.Counts
)

// acquireCounts returns an empty dense histogram once one of the
// process's slots is free; releaseCounts gives it back.
func acquireCounts(ctx context.Context) (*kmeans.Counts, error) {
	select {
	case countSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	countMu.Lock()
	defer countMu.Unlock()
	if n := len(countFree); n > 0 {
		h := countFree[n-1]
		countFree = countFree[:n-1]
		h.Reset()
		return h, nil
	}
	return new(kmeans.Counts), nil
}

func releaseCounts(h *kmeans.Counts) {
	countMu.Lock()
	countFree = append(countFree, h)
	countMu.Unlock()
	<-countSlots
}

// FreeColourCounts drops the idle histograms of this process (64 MiB
// each): a driver that ran the pipeline in its own process calls it before
// its k-means.
func FreeColourCounts() {
	countMu.Lock()
	countFree = nil
	countMu.Unlock()
}

// CountColoursFn counts the RGB colours of every image of one input shard
// (an IndexedInput; grey images count as r = g = b) and writes them to
// Dir/ColourPartName(index), emitting the part's path.
type CountColoursFn struct{ Dir string }

// ProcessElement counts one shard.
func (f *CountColoursFn) ProcessElement(ctx context.Context, task string, emit func(string)) error {
	var ti IndexedInput
	if err := json.Unmarshal([]byte(task), &ti); err != nil {
		return fmt.Errorf("palette: bad input %q: %w", task, err)
	}
	h, err := acquireCounts(ctx)
	if err != nil {
		return err
	}
	defer releaseCounts(h)
	err = records.ScanFile(ctx, ti.Input.Path, func(img records.Image) error {
		rgb, err := imgproc.ToRGB(img.Pix, img.C)
		if err != nil {
			return fmt.Errorf("palette: %s: image %s: %w", ti.Input.Path, img.Key, err)
		}
		return h.Add(rgb)
	})
	if err != nil {
		return err
	}
	path := storage.Join(f.Dir, ColourPartName(ti.Index))
	if _, err := writeCounts(ctx, path, h); err != nil {
		return err
	}
	emit(path)
	return nil
}

// writeCounts writes h's encoding to path atomically and returns its size.
func writeCounts(ctx context.Context, path string, h *kmeans.Counts) (int64, error) {
	w, err := storage.Create(ctx, path)
	if err != nil {
		return 0, err
	}
	n, err := h.WriteTo(w)
	if err != nil {
		w.Abort()
		return 0, fmt.Errorf("palette: write %s: %w", path, err)
	}
	return n, w.Close()
}

// MergeColoursFn adds every part into one histogram and writes it to Path.
type MergeColoursFn struct{ Path string }

// ProcessElement merges the parts, in name order, one at a time.
func (f *MergeColoursFn) ProcessElement(ctx context.Context, _ int, iter func(*string) bool, emit func(string)) error {
	var parts []string
	var p string
	for iter(&p) {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	parts = slices.Compact(parts) // a part emitted twice (a retried bundle) counts once
	h := new(kmeans.Counts)
	for _, p := range parts {
		if err := MergeCountsFile(ctx, h, p); err != nil {
			return err
		}
	}
	n, err := writeCounts(ctx, f.Path, h)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(ColourSummary{Parts: len(parts), Distinct: h.Distinct(), Pixels: h.Total(), Bytes: n})
	emit(string(b))
	return nil
}

// MergeCountsFile adds the colour counts of the file at path into h.
func MergeCountsFile(ctx context.Context, h *kmeans.Counts, path string) error {
	rc, err := storage.Open(ctx, path)
	if err != nil {
		return fmt.Errorf("palette: %w", err)
	}
	defer rc.Close()
	if err := h.MergeFrom(rc, path); err != nil {
		return fmt.Errorf("palette: %w", err)
	}
	return nil
}

// ReadHistogram reads the colour counts the palette pipeline wrote.
func ReadHistogram(ctx context.Context, path string) (*kmeans.Counts, error) {
	h := new(kmeans.Counts)
	if err := MergeCountsFile(ctx, h, path); err != nil {
		return nil, fmt.Errorf("%w (the pipeline finished without writing it whole)", err)
	}
	return h, nil
}
