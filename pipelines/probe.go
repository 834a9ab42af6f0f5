package pipelines

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/progress"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func init() {
	register.DoFn3x1[context.Context, string, func(string), error](&ExtractFeaturesFn{})
	register.DoFn3x1[context.Context, string, func(string), error](&RawPixelsFn{})
	register.DoFn3x1[context.Context, string, func(string), error](&IndexLinesFn{})
	beam.RegisterType(reflectTypeOf[records.Features]())
}

// ProbeConfig is the feature-extraction pipeline's input.
type ProbeConfig struct {
	// Inputs is a file of ShardInput JSON lines (WriteLines): the labelled
	// Tokens shards, in order; a shard's line number names its outputs.
	Inputs string
	// Weights is a model checkpoint (local or gs://); empty means a model
	// of Config initialised randomly with Seed (the random-init baseline).
	Weights string
	Config  model.Config
	Seed    uint64
	// Objective the model was trained with; a BERT model is run unmasked.
	Objective string
	Batch     int // records per forward pass
	// MaxPerShard caps the records read from each shard (0: all);
	// MaxPerSplitShard those of each shard of the splits it names (the
	// probe's max_train and max_eval spread over each split's shards).
	MaxPerShard      int
	MaxPerSplitShard map[string]int
	// PoolGrid pools each layer's features over a PoolGrid×PoolGrid grid
	// of regions of the records' token grid (0 or 1: over all of it).
	PoolGrid int
	Dir      string
}

// Probe extracts, for every record of every input shard, the linear-probe
// features of every layer (the mean over positions of the normalised
// hidden state; layer 0 is the embedding) with one batched forward pass per
// Batch records. Each worker writes its input shard's features straight to
// one Features shard per layer, in the input's order: no feature crosses a
// shuffle, so a worker holds one batch, whatever the split's size. It
// returns the written Features shards, a PCollection of ShardStats.
func Probe(s beam.Scope, cfg ProbeConfig) (beam.PCollection, error) {
	if cfg.Inputs == "" {
		return beam.PCollection{}, fmt.Errorf("pipelines: probe: no input shard list")
	}
	if cfg.Batch <= 0 {
		return beam.PCollection{}, fmt.Errorf("pipelines: probe: batch must be positive")
	}
	s = s.Scope("probe")
	tasks := beam.Reshuffle(s.Scope("SpreadShards"), indexed(s.Scope("ListShards"), cfg.Inputs))
	written := beam.ParDo(s.Scope("ExtractFeatures"), &ExtractFeaturesFn{
		Weights: cfg.Weights, Config: cfg.Config, Seed: cfg.Seed, Objective: cfg.Objective, Batch: cfg.Batch,
		MaxPerShard: cfg.MaxPerShard, MaxPerSplitShard: cfg.MaxPerSplitShard, PoolGrid: cfg.PoolGrid, Dir: cfg.Dir, Run: runNonce(),
	}, tasks)
	return writeStats(s, &WriteStatsFn{Dir: cfg.Dir}, written), nil
}

// indexed reads a list file and numbers its lines: each element is the
// JSON of an IndexedInput.
func indexed(s beam.Scope, list string) beam.PCollection {
	return beam.ParDo(s, &IndexLinesFn{}, beam.Create(s, list))
}

// IndexedInput is an input shard and its line number in the list.
type IndexedInput struct {
	Index int        `json:"index"`
	Input ShardInput `json:"input"`
}

// IndexLinesFn emits the lines of a list of ShardInput as IndexedInput JSON.
type IndexLinesFn struct{}

// ProcessElement reads the list.
func (f *IndexLinesFn) ProcessElement(ctx context.Context, path string, emit func(string)) error {
	i := 0
	return (&ReadLinesFn{}).ProcessElement(ctx, path, func(line string) {
		var in ShardInput
		json.Unmarshal([]byte(line), &in)
		b, _ := json.Marshal(IndexedInput{Index: i, Input: in})
		i++
		emit(string(b))
	})
}

// FeaturesShardName names the Features shard of one layer of the idx-th
// input shard of split.
func FeaturesShardName(split string, layer, idx int) string {
	return fmt.Sprintf("%s-layer%02d-%05d.msgpack", split, layer, idx)
}

// FeaturesShardLayer returns the layer of a Features shard of split named
// by FeaturesShardName.
func FeaturesShardLayer(name, split string) (int, error) {
	var layer, idx int
	rest, ok := strings.CutPrefix(name, split+"-layer")
	if ok {
		if n, err := fmt.Sscanf(rest, "%d-%d.msgpack", &layer, &idx); err == nil && n == 2 && layer >= 0 {
			return layer, nil
		}
	}
	return 0, fmt.Errorf("probe: %q is not a %s features shard name (%s)", name, split, FeaturesShardName(split, 0, 0))
}

// featureWriters writes one Features shard per layer for one input shard.
type featureWriters struct {
	split string
	idx   int
	f     []*records.ShardFile
}

func newFeatureWriters(ctx context.Context, dir, split string, idx, layers int) (*featureWriters, error) {
	fw := &featureWriters{split: split, idx: idx}
	for l := range layers {
		f, err := records.CreateShard(ctx, storage.Join(dir, FeaturesShardName(split, l, idx)), records.KindFeatures)
		if err != nil {
			fw.abort()
			return nil, err
		}
		fw.f = append(fw.f, f)
	}
	return fw, nil
}

func (fw *featureWriters) write(f *records.Features) error {
	return fw.f[f.Layer].Write(f, f.Label)
}

// close publishes every layer's shard and emits their stats.
func (fw *featureWriters) close(emit func(string)) error {
	for l, f := range fw.f {
		st, err := closeShard(f, FeaturesShardName(fw.split, l, fw.idx), fw.split)
		if err != nil {
			for _, g := range fw.f[l+1:] {
				g.Abort()
			}
			return err
		}
		emit(shardEvent(st))
	}
	return nil
}

func (fw *featureWriters) abort() {
	for _, f := range fw.f {
		f.Abort()
	}
}

// ExtractFeaturesFn runs the model over one Tokens shard in batches and
// emits each record's features at every layer, keyed "split|layer". The
// model is loaded once per DoFn instance, in Setup.
type ExtractFeaturesFn struct {
	Weights     string
	Config      model.Config
	Seed        uint64
	Objective   string
	Batch       int
	MaxPerShard int
	// MaxPerSplitShard caps the records read from each shard of the
	// splits it names.
	MaxPerSplitShard map[string]int
	PoolGrid         int
	Dir              string
	Run              string // runNonce: models are shared within a pipeline, never across
}

// probeModels lends the models of a process, one per core (a Model keeps
// its inference workspace and is not goroutine-safe).
var probeModels lender[*model.Model]

func (f *ExtractFeaturesFn) modelKey() string {
	return fmt.Sprintf("%s|%s|%d|%v", f.Run, f.Weights, f.Seed, f.Config)
}

// Setup checks that the model loads.
func (f *ExtractFeaturesFn) Setup(ctx context.Context) error {
	m, err := probeModels.get(ctx, f.modelKey(), func() (*model.Model, error) { return f.load(ctx) })
	if err == nil {
		probeModels.put(f.modelKey(), m)
	}
	return err
}

// load loads the model (a random initialisation with Seed when there are
// no Weights).
func (f *ExtractFeaturesFn) load(ctx context.Context) (*model.Model, error) {
	if f.Weights == "" {
		m, err := model.New(f.Config)
		if err != nil {
			return nil, err
		}
		m.Params.Init(f.Seed)
		return m, nil
	}
	b, err := storage.ReadFile(ctx, f.Weights)
	if err != nil {
		return nil, fmt.Errorf("probe: load model: %w", err)
	}
	p, _, err := model.LoadCheckpoint(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("probe: load model %s: %w", f.Weights, err)
	}
	if p.Config != f.Config {
		return nil, fmt.Errorf("probe: model %s is %v, want %v", f.Weights, p.Config, f.Config)
	}
	return model.FromParams(p), nil
}

// ProcessElement extracts the features of one shard.
func (f *ExtractFeaturesFn) ProcessElement(ctx context.Context, task string, emit func(string)) error {
	var ti IndexedInput
	if err := json.Unmarshal([]byte(task), &ti); err != nil {
		return fmt.Errorf("probe: bad input %q: %w", task, err)
	}
	in := ti.Input
	obj, err := model.ParseObjective(f.Objective)
	if err != nil {
		return err
	}
	m, err := probeModels.get(ctx, f.modelKey(), func() (*model.Model, error) { return f.load(ctx) })
	if err != nil {
		return err
	}
	defer probeModels.put(f.modelKey(), m)
	limit := ShardLimit(in.Split, f.MaxPerShard, f.MaxPerSplitShard)
	fw, err := newFeatureWriters(ctx, f.Dir, in.Split, ti.Index, f.Config.Layers+1)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	T, L := f.Config.Seq, f.Config.Layers
	pool := model.Pool{N: f.PoolGrid}
	C := pool.Regions() * f.Config.D // features per layer
	var batch []records.Tokens
	tok := make([]int32, f.Batch*T)
	feats := make([]float32, (L+1)*f.Batch*C)
	var mask []bool
	flush := func() error {
		B := len(batch)
		if B == 0 {
			return nil
		}
		for b, r := range batch {
			for t, v := range r.Tok {
				tok[b*T+t] = int32(v)
			}
		}
		if obj == model.BERT {
			mask = make([]bool, B*T) // no mask at probe time
		}
		if err := m.ProbeGrid(tok[:B*T], mask, obj, feats[:(L+1)*B*C], pool); err != nil {
			return fmt.Errorf("probe: %s: %w", in.Path, err)
		}
		progress.Add(progress.ProbeFeatures, int64(B)) // the driver's bar, when this worker runs in its process
		for l := 0; l <= L; l++ {
			for b, r := range batch {
				rec := records.Features{Key: r.Key, Label: r.Label, Layer: l, Vec: feats[(l*B+b)*C : (l*B+b+1)*C]}
				if err := fw.write(&rec); err != nil {
					return fmt.Errorf("probe: %w", err)
				}
			}
		}
		batch = batch[:0]
		return nil
	}
	n := 0
	err = records.ScanFile(ctx, in.Path, func(r records.Tokens) error {
		if n++; limit > 0 && n > limit {
			return io.EOF
		}
		if len(r.Tok) != T || r.Vocab != f.Config.Vocab {
			return fmt.Errorf("probe: %s: record %s has %d tokens of vocabulary %d; the model takes %d of %d", in.Path, r.Key, len(r.Tok), r.Vocab, T, f.Config.Vocab)
		}
		if pool.N > 1 {
			if pool.H == 0 {
				pool.H, pool.W = r.H, r.W
				if err := pool.Check(T); err != nil {
					return fmt.Errorf("probe: %s: record %s: %w", in.Path, r.Key, err)
				}
			} else if r.H != pool.H || r.W != pool.W {
				return fmt.Errorf("probe: %s: record %s is a %dx%d token grid, earlier records %dx%d", in.Path, r.Key, r.H, r.W, pool.H, pool.W)
			}
		}
		batch = append(batch, r)
		if len(batch) == f.Batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		fw.abort()
		return err
	}
	return fw.close(emit)
}

// ShardLimit is the number of records the feature pipeline reads from a
// shard of split (0: all): the smaller positive cap of perShard and the
// split's own cap.
func ShardLimit(split string, perShard int, perSplitShard map[string]int) int {
	if c := perSplitShard[split]; c > 0 && (perShard == 0 || c < perShard) {
		return c
	}
	return perShard
}

// RawPixelsFn writes the raw-pixel baseline's features of one Image
// shard (an IndexedInput): each image whose key is in the keys file,
// area-resized to H×W when H > 0 (the model's input resolution), scaled to
// [0, 1] and flattened (probe.PixelFeatures), as layer 0 of the split the
// keys file gives it. The keys file (JSON lines of KeySplit) is read once
// per worker.
type RawPixelsFn struct {
	Keys string
	Dir  string
	H, W int
	Run  string // runNonce: the keys table is shared within a pipeline, never across

	split map[string]string // read-only, shared by the process's instances
}

// KeySplit is one line of RawPixelsFn's keys file.
type KeySplit struct {
	Key   string `json:"key"`
	Split string `json:"split"`
}

// rawPixelKeys is the keys table of a worker process, read once and
// shared by its RawPixelsFn instances.
var rawPixelKeys shared[map[string]string]

// Setup reads the keys file, once per process.
func (f *RawPixelsFn) Setup(ctx context.Context) error {
	split, err := rawPixelKeys.get(f.Run+"|"+f.Keys, func() (map[string]string, error) {
		split := map[string]string{}
		err := (&ReadLinesFn{}).ProcessElement(ctx, f.Keys, func(line string) {
			var ks KeySplit
			if json.Unmarshal([]byte(line), &ks) == nil {
				split[ks.Key] = ks.Split
			}
		})
		return split, err
	})
	f.split = split
	return err
}

// rawPixelSlots: one Image shard per core at once in a worker process,
// each with a feature writer per split, as every other shard-reading DoFn
// (it did not stop the probe-baselines worker growing in bench/memory.sh:
// 154 → 186 MiB from 50k to 200k images with it, 154 → 177 without).
var rawPixelSlots = workSlots{perCore: 1}

// ProcessElement writes the features of one Image shard, one Features
// shard per split it feeds.
func (f *RawPixelsFn) ProcessElement(ctx context.Context, task string, emit func(string)) error {
	var ti IndexedInput
	if err := json.Unmarshal([]byte(task), &ti); err != nil {
		return fmt.Errorf("probe: bad input %q: %w", task, err)
	}
	if err := rawPixelSlots.acquire(ctx); err != nil {
		return err
	}
	defer rawPixelSlots.release()
	writers := map[string]*featureWriters{}
	// Only the probe's images are decoded: the rest of the shard is read
	// no further than each record's key.
	inKeys := func(key string) bool { _, ok := f.split[key]; return ok }
	err := records.ScanFileWhere(ctx, ti.Input.Path, inKeys, func(img records.Image) error {
		split := f.split[img.Key]
		fw := writers[split]
		if fw == nil {
			var err error
			if fw, err = newFeatureWriters(ctx, f.Dir, split, ti.Index, 1); err != nil {
				return err
			}
			writers[split] = fw
		}
		h, w := img.H, img.W
		if f.H > 0 {
			h, w = f.H, f.W
		}
		vec, err := probe.PixelFeatures(img, h, w)
		if err != nil {
			return err
		}
		return fw.write(&records.Features{Key: img.Key, Label: img.Label, Vec: vec})
	})
	for _, fw := range writers {
		if err != nil {
			fw.abort()
		} else if err = fw.close(emit); err != nil {
			err = fmt.Errorf("probe: raw pixels: %w", err)
		}
	}
	return err
}

// RawPixels writes the raw-pixel baseline's features of the images in
// the Image shards listed in images whose keys the keys file lists, at
// h×w (0: each image's own size), and returns the written Features
// shards, a PCollection of ShardStats.
func RawPixels(s beam.Scope, images, keys, dir string, h, w int) beam.PCollection {
	s = s.Scope("rawpixels")
	tasks := beam.Reshuffle(s.Scope("SpreadShards"), indexed(s.Scope("ListShards"), images))
	written := beam.ParDo(s.Scope("Features"), &RawPixelsFn{Keys: keys, Dir: dir, H: h, W: w, Run: runNonce()}, tasks)
	return writeStats(s, &WriteStatsFn{Dir: dir}, written)
}
