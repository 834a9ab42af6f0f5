// Package pipelines holds igpt's Beam graphs: one composite transform per
// stage, written as plain functions of a scope and a config. DoFns are named
// …Fn and registered in init, so they run on any runner: prism, direct and
// Dataflow alike.
package pipelines

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
)

func init() {
	beam.RegisterType(reflect.TypeOf((*records.Image)(nil)).Elem())

	register.DoFn3x1[context.Context, string, func(string), error](&ReadLinesFn{})
	register.DoFn3x1[context.Context, string, func(string), error](&ReadUnitFn{})
	register.DoFn4x1[context.Context, int, func(*string) bool, func(ShardStats), error](&WriteStatsFn{})
	register.Emitter1[string]()
	register.Emitter1[ShardStats]()
	beam.RegisterType(reflect.TypeOf((*ShardStats)(nil)).Elem())
	register.Iter1[records.Image]()
	register.Iter1[string]()
}

// StatsName is the file the download pipeline writes last into its output
// folder, listing the shards it wrote and the images it skipped.
const StatsName = "_stats.json"

// DownloadConfig is the download pipeline's input.
type DownloadConfig struct {
	// Units is a file of JSON lines, one UnitTask each, written by the
	// launcher (WriteLines): the job graph carries its path only, so its
	// size does not grow with the source.
	Units string
	// Classes is the class table the units reference (WriteUnits): one
	// file, read once per worker. "" for a unit list whose units carry
	// their own class names (the format before the class table).
	Classes string
	// ShardBytes is the decoded pixel bytes after which a unit's output
	// shard is closed and the next one begun.
	ShardBytes int64
	// Resize, when > 0, scales every image so its short side is Resize and
	// crops the centre Resize×Resize square, in the workers.
	Resize int
	Dir    string // output folder (local or gs://)
}

// UnitTask is one line of DownloadConfig.Units: a unit and its index among
// its split's units (which names its shards).
type UnitTask struct {
	Index int           `json:"index"`
	Unit  datasets.Unit `json:"unit"`
}

// ShardStats describes one written shard.
type ShardStats struct {
	Name    string        `json:"name"`
	Split   string        `json:"split"`
	Records int64         `json:"records"`
	Bytes   int64         `json:"bytes"`
	Labels  map[int]int64 `json:"labels"` // records per label
	// Codes counts each token value (vqvae-encode only).
	Codes []int64 `json:"codes,omitempty"`
}

// DownloadStats is the content of StatsName.
type DownloadStats struct {
	Shards  []ShardStats `json:"shards"`
	Skipped []string     `json:"skipped"` // one line per skipped image: source and reason
}

// Download reads every unit of a dataset source in parallel. One worker
// streams one unit from its source (local or gs://, never copied whole),
// decodes its images and writes them in source order to that unit's own
// shards, each closed after ShardBytes of pixels: no image crosses a
// shuffle, so memory per worker is one image plus write buffers whatever
// the dataset's size, and a retried unit rewrites the same bytes. Then
// StatsName lists the shards and skipped images. It returns the written
// shards, a PCollection of ShardStats.
func Download(s beam.Scope, cfg DownloadConfig) (beam.PCollection, error) {
	s = s.Scope("download")
	if cfg.Units == "" || cfg.ShardBytes <= 0 {
		return beam.PCollection{}, fmt.Errorf("pipelines: download: need a units file and ShardBytes > 0")
	}
	units := beam.Reshuffle(s.Scope("SpreadUnits"), CreateFromFile(s.Scope("ListUnits"), cfg.Units))
	events := beam.ParDo(s.Scope("ReadUnits"), &ReadUnitFn{Dir: cfg.Dir, Classes: cfg.Classes, ShardBytes: cfg.ShardBytes, Resize: cfg.Resize}, units)
	return writeStats(s, &WriteStatsFn{Dir: cfg.Dir}, events), nil
}

// writeStats gathers the stats events of a pipeline's writers on one worker
// (f writes StatsName and fills empty shards) and returns every shard of
// the output, a PCollection of ShardStats.
func writeStats(s beam.Scope, f *WriteStatsFn, events beam.PCollection) beam.PCollection {
	all := beam.GroupByKey(s.Scope("Collect"), beam.AddFixedKey(s, events))
	return beam.ParDo(s.Scope("WriteStats"), f, all)
}

// CreateFromFile is beam.CreateList for a list the launcher wrote to a
// file with WriteLines: the lines become the PCollection, and the job graph
// holds the file's path, not the list.
func CreateFromFile(s beam.Scope, path string) beam.PCollection {
	return beam.ParDo(s, &ReadLinesFn{}, beam.Create(s, path))
}

// WriteLines writes one JSON value a line to path, for CreateFromFile.
func WriteLines[T any](ctx context.Context, path string, items []T) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return fmt.Errorf("pipelines: encode %s: %w", path, err)
		}
	}
	return storage.WriteFile(ctx, path, b.Bytes())
}

// ReadLinesFn emits the non-empty lines of a file, streamed through the
// sources' shared line reader (datasets.EachLine, capped at
// datasets.MaxListLine a line): a damaged list that is one huge line is
// refused, not read whole.
type ReadLinesFn struct{}

// ProcessElement reads the file at path.
func (f *ReadLinesFn) ProcessElement(ctx context.Context, path string, emit func(string)) error {
	rc, err := storage.Open(ctx, path)
	if err != nil {
		return err
	}
	defer rc.Close()
	return datasets.EachLine(rc, path, datasets.MaxListLine, func(_ int, line []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if l := strings.TrimSpace(string(line)); l != "" {
			emit(l)
		}
		return nil
	})
}

// WriteUnits writes the download stage's unit list and its class table:
// the units at unitsPath, one UnitTask a line without their class names,
// and the names once, at classesPath (datasets.WriteClassTable). The list
// grows as units + classes: with the names in every unit it grew as
// units × classes (12 MB at 1000 classes, gigabytes at ImageNet-21k).
func WriteUnits(ctx context.Context, unitsPath, classesPath string, tasks []UnitTask, classes []string) error {
	var b bytes.Buffer
	if err := datasets.WriteClassTable(&b, classes); err != nil {
		return fmt.Errorf("pipelines: encode %s: %w", classesPath, err)
	}
	if err := storage.WriteFile(ctx, classesPath, b.Bytes()); err != nil {
		return err
	}
	b.Reset()
	enc := json.NewEncoder(&b)
	for _, t := range tasks {
		t.Unit.Classes = nil // the table holds them
		if err := enc.Encode(t); err != nil {
			return fmt.Errorf("pipelines: encode %s: %w", unitsPath, err)
		}
	}
	return storage.WriteFile(ctx, unitsPath, b.Bytes())
}

// ReadClassTable reads the class table at path (WriteUnits).
func ReadClassTable(ctx context.Context, path string) (*datasets.ClassTable, error) {
	rc, err := storage.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("download: class table: %w", err)
	}
	defer rc.Close()
	return datasets.ReadClassTable(rc, path)
}

// DecodeUnitTask parses one line of a unit list (WriteUnits) and gives its
// unit the class table. A unit that carries its own class names (a list
// written before the class table) keeps them; table may then be nil.
func DecodeUnitTask(line []byte, table *datasets.ClassTable) (UnitTask, error) {
	var t UnitTask
	if err := json.Unmarshal(line, &t); err != nil {
		return t, fmt.Errorf("download: decode unit %.80q: %w (the unit list is damaged: rerun the download stage with --force)", line, err)
	}
	u := &t.Unit
	switch {
	case t.Index < 0 || u.FirstIndex < 0 || u.Count < 0 || u.Offset < 0 || u.Size < 0:
		return t, fmt.Errorf("download: unit %d of split %q: a negative index, count, offset or size: the unit list is damaged: rerun the download stage with --force", t.Index, u.Split)
	case u.Format == "" || u.Split == "":
		return t, fmt.Errorf("download: unit %d: no format or split: the unit list is damaged: rerun the download stage with --force", t.Index)
	case u.Classes != nil:
		// The previous format: the unit carries its names.
	case table == nil:
		return t, fmt.Errorf("download: unit %d of split %q names no classes and no class table was given: rerun the download stage with --force", t.Index, u.Split)
	default:
		u.UseClasses(table)
	}
	if u.Class != "" {
		if _, ok := u.LabelOf(u.Class); !ok {
			return t, fmt.Errorf("download: unit %d of split %q: class %.80q is not in the class table: the unit list and class table do not match; rerun the download stage with --force", t.Index, u.Split, u.Class)
		}
	}
	return t, nil
}

// ReadUnitFn reads, decodes and writes one unit (a JSON UnitTask) and emits
// a stats event (JSON) per written shard and skipped image.
type ReadUnitFn struct {
	Dir        string
	Classes    string // the class table (WriteUnits); "" when units carry their names
	ShardBytes int64
	Resize     int

	table *datasets.ClassTable
}

// Setup reads the class table, once per worker.
func (f *ReadUnitFn) Setup(ctx context.Context) error {
	if f.Classes == "" || f.table != nil {
		return nil
	}
	t, err := ReadClassTable(ctx, f.Classes)
	if err != nil {
		return err
	}
	f.table = t
	return nil
}

// unitSlots bounds the units a worker process reads at once: two per core
// (decoding is CPU-bound; the second overlaps the reads).
var unitSlots = workSlots{perCore: 2}

// ProcessElement reads one unit.
func (f *ReadUnitFn) ProcessElement(ctx context.Context, taskJSON string, emit func(string)) error {
	if err := unitSlots.acquire(ctx); err != nil {
		return err
	}
	defer unitSlots.release()
	if err := f.Setup(ctx); err != nil {
		return err
	}
	t, err := DecodeUnitTask([]byte(taskJSON), f.table)
	if err != nil {
		return err
	}
	u := t.Unit
	if !datasets.ReadsInPlace(u.Format) {
		// The older readers need a local file; a copy is made on this
		// worker, never by the launcher.
		if u.Path, err = localize(ctx, u.Path); err != nil {
			return err
		}
		if u.LabelPath != "" {
			if u.LabelPath, err = localize(ctx, u.LabelPath); err != nil {
				return err
			}
		}
	}
	w := &unitWriter{dir: f.Dir, split: u.Split, unit: t.Index, limit: f.ShardBytes, emit: emit}
	err = datasets.ReadUnit(ctx, u, func(it datasets.Item) error {
		img, err := datasets.Decode(it, u.Options)
		if isSkipped(err) {
			emit(skippedEvent(err.Error()))
			return nil
		}
		if err != nil {
			return err
		}
		if f.Resize > 0 && (img.H != f.Resize || img.W != f.Resize) {
			if img.Pix, err = imgproc.ShortSideCrop(img.Pix, img.H, img.W, img.C, f.Resize); err != nil {
				return fmt.Errorf("download: %s: %w", it.Source, err)
			}
			img.H, img.W = f.Resize, f.Resize
		}
		return w.write(ctx, &img)
	})
	if err == nil {
		err = w.close()
	}
	if err != nil {
		w.abort()
		return fmt.Errorf("download: %w", err)
	}
	return nil
}

// unitWriter streams one unit's images into shards named
// <split>-<unit>-part<NNNN>.msgpack, starting a new shard once the current
// one holds limit bytes of pixels.
type unitWriter struct {
	dir, split string
	unit       int
	limit      int64
	emit       func(string)

	part   int
	pixels int64
	f      *records.ShardFile
	name   string
}

// UnitShardName names part of the shards written for unit of split.
func UnitShardName(split string, unit, part int) string {
	return fmt.Sprintf("%s-%05d-part%04d.msgpack", split, unit, part)
}

func (u *unitWriter) write(ctx context.Context, img *records.Image) error {
	if u.f == nil {
		u.name = UnitShardName(u.split, u.unit, u.part)
		f, err := records.CreateShard(ctx, storage.Join(u.dir, u.name), records.KindImage)
		if err != nil {
			return err
		}
		u.f = f
	}
	if err := u.f.Write(img, img.Label); err != nil {
		return err
	}
	u.pixels += int64(len(img.Pix))
	if u.pixels >= u.limit {
		return u.close()
	}
	return nil
}

// close publishes the open shard, if any, and emits its stats.
func (u *unitWriter) close() error {
	if u.f == nil {
		return nil
	}
	st, err := closeShard(u.f, u.name, u.split)
	if err != nil {
		return err
	}
	u.emit(shardEvent(st))
	u.f, u.pixels = nil, 0
	u.part++
	return nil
}

func (u *unitWriter) abort() {
	if u.f != nil {
		u.f.Abort()
		u.f = nil
	}
}

// statsEvent is what WriteStatsFn gathers: a written shard or a skipped image.
type statsEvent struct {
	Shard   *ShardStats `json:"shard,omitempty"`
	Skipped string      `json:"skipped,omitempty"`
}

// writeShard writes recs, in order, as shard idx of n of split in dir,
// atomically, and returns its stats.
func writeShard[T any](ctx context.Context, dir, split string, idx, n int, kind records.Kind, recs []T, label func(*T) int) (ShardStats, error) {
	return writeNamedShard(ctx, dir, records.ShardName(split, idx, n), split, kind, recs, label)
}

// writeNamedShard writes recs, in order, as the shard name of split in dir.
func writeNamedShard[T any](ctx context.Context, dir, name, split string, kind records.Kind, recs []T, label func(*T) int) (ShardStats, error) {
	f, err := records.CreateShard(ctx, storage.Join(dir, name), kind)
	if err != nil {
		return ShardStats{}, err
	}
	for i := range recs {
		if err := f.Write(&recs[i], label(&recs[i])); err != nil {
			f.Abort()
			return ShardStats{}, err
		}
	}
	return closeShard(f, name, split)
}

// closeShard publishes f, the shard name of split, and returns its stats.
func closeShard(f *records.ShardFile, name, split string) (ShardStats, error) {
	n, b, err := f.Close()
	if err != nil {
		return ShardStats{}, err
	}
	return ShardStats{Name: name, Split: split, Records: n, Bytes: b, Labels: f.Labels}, nil
}

// shardEvent is the statsEvent of a written shard, as WriteStatsFn reads it.
func shardEvent(st ShardStats) string {
	b, _ := json.Marshal(statsEvent{Shard: &st})
	return string(b)
}

func skippedEvent(reason string) string {
	b, _ := json.Marshal(statsEvent{Skipped: reason})
	return string(b)
}

// WriteStatsFn gathers every shard's stats and skipped image, writes empty
// Tokens shards for the indices of Shards that received no record, so
// "of-N" names hold, writes StatsName and emits the stats of every shard
// it lists, in name order.
type WriteStatsFn struct {
	Dir    string
	Shards map[string]int // nil: no empty shards to fill
}

// ProcessElement runs once, on the single fixed key.
func (f *WriteStatsFn) ProcessElement(ctx context.Context, _ int, iter func(*string) bool, emit func(ShardStats)) error {
	var out DownloadStats
	seen := map[string]bool{}
	var ev string
	for iter(&ev) {
		var e statsEvent
		if err := json.Unmarshal([]byte(ev), &e); err != nil {
			return fmt.Errorf("download: bad stats event %q: %w", ev, err)
		}
		if e.Shard == nil {
			out.Skipped = append(out.Skipped, e.Skipped)
			continue
		}
		out.Shards = append(out.Shards, *e.Shard)
		seen[e.Shard.Split] = true
	}
	for split := range seen {
		n := f.Shards[split]
		for i := 0; i < n; i++ {
			name := records.ShardName(split, i, n)
			if hasShard(out.Shards, name) {
				continue
			}
			st, err := writeShard(ctx, f.Dir, split, i, n, records.KindTokens, []records.Tokens(nil), func(x *records.Tokens) int { return x.Label })
			if err != nil {
				return err
			}
			out.Shards = append(out.Shards, st)
		}
	}
	sort.Slice(out.Shards, func(i, j int) bool { return out.Shards[i].Name < out.Shards[j].Name })
	sort.Strings(out.Skipped)
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		return err
	}
	if err := storage.WriteFile(ctx, storage.Join(f.Dir, StatsName), b); err != nil {
		return err
	}
	for _, st := range out.Shards {
		emit(st)
	}
	return nil
}

func hasShard(shards []ShardStats, name string) bool {
	for _, s := range shards {
		if s.Name == name {
			return true
		}
	}
	return false
}
