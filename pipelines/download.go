// Package pipelines holds igpt's Beam graphs: one composite transform per
// stage, written as plain functions of a scope and a config. DoFns are named
// …Fn and registered in init, so they run on any runner: prism, direct and
// Dataflow alike.
package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
)

func init() {
	beam.RegisterType(reflect.TypeOf((*datasets.Item)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*records.Image)(nil)).Elem())

	register.DoFn3x1[context.Context, string, func(datasets.Item), error](&ReadUnitFn{})
	register.DoFn3x1[datasets.Item, func(string, records.Image), func(string), error](&DecodeFn{})
	register.DoFn4x1[context.Context, string, func(*records.Image) bool, func(string), error](&WriteShardFn{})
	register.DoFn3x1[context.Context, int, func(*string) bool, error](&WriteStatsFn{})
	register.Function1x1(skippedEvent)
	register.Emitter1[datasets.Item]()
	register.Emitter2[string, records.Image]()
	register.Emitter1[string]()
	register.Iter1[records.Image]()
	register.Iter1[string]()
}

// StatsName is the file the download pipeline writes last into its output
// folder, listing the shards it wrote and the images it skipped.
const StatsName = "_stats.json"

// DownloadConfig is the download pipeline's input.
type DownloadConfig struct {
	Units   []datasets.Unit  // from datasets.Inspect; paths readable by workers
	Options datasets.Options // decoding policy
	Shards  map[string]int   // shards per split; every split of Units must be present
	Dir     string           // output folder (local or gs://)
}

// ShardStats describes one written shard.
type ShardStats struct {
	Name    string        `json:"name"`
	Split   string        `json:"split"`
	Records int64         `json:"records"`
	Bytes   int64         `json:"bytes"`
	Labels  map[int]int64 `json:"labels"` // records per label
}

// DownloadStats is the content of StatsName.
type DownloadStats struct {
	Shards  []ShardStats `json:"shards"`
	Skipped []string     `json:"skipped"` // one line per skipped image: source and reason
}

// Download reads every unit of a dataset source in parallel, decodes its
// images, assigns each to one of N shards of its split by a hash of its key,
// and writes each shard sorted by key (so a retried bundle rewrites the same
// bytes), then StatsName.
func Download(s beam.Scope, cfg DownloadConfig) error {
	s = s.Scope("download")
	var units []string
	for _, u := range cfg.Units {
		if cfg.Shards[u.Split] <= 0 {
			return fmt.Errorf("pipelines: download: no shard count for split %q", u.Split)
		}
		b, err := json.Marshal(u)
		if err != nil {
			return fmt.Errorf("pipelines: download: encode unit: %w", err)
		}
		units = append(units, string(b))
	}
	if len(units) == 0 {
		return fmt.Errorf("pipelines: download: the source has no units to read")
	}
	col := beam.CreateList(s.Scope("ListUnits"), units)
	col = beam.Reshuffle(s.Scope("SpreadUnits"), col)
	items := beam.ParDo(s.Scope("ReadUnits"), &ReadUnitFn{}, col)
	items = beam.Reshuffle(s.Scope("SpreadItems"), items)
	keyed, skipped := beam.ParDo2(s.Scope("Decode"), &DecodeFn{Options: cfg.Options, Shards: cfg.Shards}, items)
	grouped := beam.GroupByKey(s.Scope("GroupShards"), keyed)
	written := beam.ParDo(s.Scope("WriteShards"), &WriteShardFn{Dir: cfg.Dir, Shards: cfg.Shards}, grouped)
	events := beam.Flatten(s.Scope("Events"), written, beam.ParDo(s, skippedEvent, skipped))
	all := beam.GroupByKey(s.Scope("Collect"), beam.AddFixedKey(s, events))
	beam.ParDo0(s.Scope("WriteStats"), &WriteStatsFn{Dir: cfg.Dir, Shards: cfg.Shards}, all)
	return nil
}

// ReadUnitFn streams the items of one JSON-encoded datasets.Unit.
type ReadUnitFn struct{}

// ProcessElement reads one unit.
func (f *ReadUnitFn) ProcessElement(ctx context.Context, unitJSON string, emit func(datasets.Item)) error {
	var u datasets.Unit
	if err := json.Unmarshal([]byte(unitJSON), &u); err != nil {
		return fmt.Errorf("download: decode unit: %w", err)
	}
	var err error
	if u.Path, err = localize(ctx, u.Path); err != nil {
		return err
	}
	if u.LabelPath != "" {
		if u.LabelPath, err = localize(ctx, u.LabelPath); err != nil {
			return err
		}
	}
	return datasets.ReadUnit(ctx, u, func(it datasets.Item) error {
		emit(it)
		return nil
	})
}

// DecodeFn decodes items into images keyed by their shard, "split|index".
type DecodeFn struct {
	Options datasets.Options
	Shards  map[string]int
}

// ProcessElement decodes one item; bad images go to skip under the "skip"
// policy and fail the pipeline under "fail".
func (f *DecodeFn) ProcessElement(it datasets.Item, emit func(string, records.Image), skip func(string)) error {
	img, err := datasets.Decode(it, f.Options)
	if err != nil {
		if isSkipped(err) {
			skip(err.Error())
			return nil
		}
		return err
	}
	emit(ShardKey(it.Split, ShardOf(img.Key, f.Shards[it.Split])), img)
	return nil
}

// ShardOf assigns a record key to one of n shards by FNV-1a hash.
func ShardOf(key string, n int) int {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int(h.Sum64() % uint64(n))
}

// ShardKey joins a split and a shard index.
func ShardKey(split string, i int) string { return split + "|" + strconv.Itoa(i) }

func parseShardKey(k string) (string, int, error) {
	i := strings.LastIndexByte(k, '|')
	if i < 0 {
		return "", 0, fmt.Errorf("bad shard key %q", k)
	}
	n, err := strconv.Atoi(k[i+1:])
	return k[:i], n, err
}

// WriteShardFn writes one shard's images, sorted by key, and emits its
// ShardStats as JSON.
type WriteShardFn struct {
	Dir    string
	Shards map[string]int
}

// ProcessElement writes one shard.
func (f *WriteShardFn) ProcessElement(ctx context.Context, key string, iter func(*records.Image) bool, emit func(string)) error {
	split, idx, err := parseShardKey(key)
	if err != nil {
		return err
	}
	var imgs []records.Image
	var img records.Image
	for iter(&img) {
		imgs = append(imgs, img)
		img = records.Image{}
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Key < imgs[j].Key })
	for i := 1; i < len(imgs); i++ {
		if imgs[i].Key == imgs[i-1].Key {
			return fmt.Errorf("download: two images with key %q in split %s", imgs[i].Key, split)
		}
	}
	st, err := writeImageShard(ctx, f.Dir, split, idx, f.Shards[split], imgs)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	b, _ := json.Marshal(statsEvent{Shard: &st})
	emit(string(b))
	return nil
}

// statsEvent is what WriteStatsFn gathers: a written shard or a skipped image.
type statsEvent struct {
	Shard   *ShardStats `json:"shard,omitempty"`
	Skipped string      `json:"skipped,omitempty"`
}

// writeImageShard writes images to shard idx of n of split in dir.
func writeImageShard(ctx context.Context, dir, split string, idx, n int, imgs []records.Image) (ShardStats, error) {
	return writeShard(ctx, dir, split, idx, n, records.KindImage, imgs, func(x *records.Image) int { return x.Label })
}

// writeShard writes recs, in order, as shard idx of n of split in dir,
// atomically, and returns its stats.
func writeShard[T any](ctx context.Context, dir, split string, idx, n int, kind records.Kind, recs []T, label func(*T) int) (ShardStats, error) {
	return writeNamedShard(ctx, dir, records.ShardName(split, idx, n), split, kind, recs, label)
}

// writeNamedShard writes recs, in order, as the shard name of split in dir.
func writeNamedShard[T any](ctx context.Context, dir, name, split string, kind records.Kind, recs []T, label func(*T) int) (ShardStats, error) {
	st := ShardStats{Name: name, Split: split, Labels: map[int]int64{}}
	w, err := storage.Create(ctx, storage.Join(dir, name))
	if err != nil {
		return st, err
	}
	rw, err := records.NewWriter(w, kind)
	if err == nil {
		for i := range recs {
			if err = rw.Write(&recs[i]); err != nil {
				break
			}
			st.Labels[label(&recs[i])]++
		}
	}
	if err == nil {
		err = rw.Flush()
	}
	if err != nil {
		w.Abort()
		return st, fmt.Errorf("write %s: %w", w.Path(), err)
	}
	if err := w.Close(); err != nil {
		return st, err
	}
	st.Records, st.Bytes = int64(rw.Count()), rw.Bytes()
	return st, nil
}

func skippedEvent(reason string) string {
	b, _ := json.Marshal(statsEvent{Skipped: reason})
	return string(b)
}

// WriteStatsFn gathers every shard's stats and skipped image, writes empty
// shards (of Kind, default Image) for indices that received no record, so
// "of-N" names hold, and writes StatsName.
type WriteStatsFn struct {
	Dir    string
	Shards map[string]int
	Kind   records.Kind
}

// ProcessElement runs once, on the single fixed key.
func (f *WriteStatsFn) ProcessElement(ctx context.Context, _ int, iter func(*string) bool) error {
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
			var st ShardStats
			var err error
			if f.Kind == records.KindTokens {
				st, err = writeShard(ctx, f.Dir, split, i, n, records.KindTokens, []records.Tokens(nil), func(x *records.Tokens) int { return x.Label })
			} else {
				st, err = writeImageShard(ctx, f.Dir, split, i, n, nil)
			}
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
	return storage.WriteFile(ctx, storage.Join(f.Dir, StatsName), b)
}

func hasShard(shards []ShardStats, name string) bool {
	for _, s := range shards {
		if s.Name == name {
			return true
		}
	}
	return false
}
