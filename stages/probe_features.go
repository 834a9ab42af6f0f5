package stages

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/pipelines"
)

// The probe's driver memory. The feature pipeline writes one Features
// shard per layer and input shard; the driver reads them back one layer
// at a time (featureSource), so it holds one layer's rows, not every
// layer's: for iGPT-S on ImageNet 32² with probe.max_train 100000 that is
// ~160,000 rows × 512 floats, ~0.3 GB a copy, where all 25 layers were
// ~8 GB. The rows are capped by probe.max_train (train) and probe.max_eval
// (val and test each), or by probe.max_per_shard per shard; without caps
// they are the splits' records, and checkProbeFeatureMemory refuses at
// plan time what would not fit this machine.

// probeCopies is how many copies of one layer's rows the driver holds at
// its peak: the rows read (FeatureSet), the assembled matrices, their
// standardised copies, and the garbage collector's headroom over the
// previous layer's.
const probeCopies = 4

// probeCaps returns the records the probe keeps of each split (0: all):
// probe.max_train for train, probe.max_eval for val and test.
func probeCaps(pc ProbeParams) map[string]int {
	return map[string]int{"train": pc.MaxTrain, "val": pc.MaxEval, "test": pc.MaxEval}
}

// probeShardCaps spreads probeCaps over each split's shards of the token
// output qm: the workers read at most that many records of each shard (the
// driver keeps the first cap of what they wrote).
func probeShardCaps(qm *Manifest, pc ProbeParams) map[string]int {
	shards := map[string]int{}
	for _, f := range qm.Files {
		if f.Split != "" {
			shards[f.Split]++
		}
	}
	per := map[string]int{}
	for split, c := range probeCaps(pc) {
		if n := shards[split]; c > 0 && n > 0 {
			per[split] = (c + n - 1) / n
		}
	}
	return per
}

// probeRows returns the rows of each split the probe's driver holds for
// the token output qm: each shard's records up to its limit, then the
// split's cap.
func probeRows(qm *Manifest, pc ProbeParams) map[string]int64 {
	per := probeShardCaps(qm, pc)
	rows := map[string]int64{}
	for _, f := range qm.Files {
		if f.Split == "" {
			continue
		}
		n := f.Records
		if lim := int64(pipelines.ShardLimit(f.Split, pc.MaxPerShard, per)); lim > 0 && lim < n {
			n = lim
		}
		rows[f.Split] += n
	}
	for split, c := range probeCaps(pc) {
		if c > 0 && rows[split] > int64(c) {
			rows[split] = int64(c)
		}
	}
	return rows
}

// probeWidth is one feature set the probe's driver fits: its name and the
// floats of each row.
type probeWidth struct {
	what  string
	width int
}

// checkProbeFeatureMemory refuses, before any feature is extracted, a
// probe whose driver would hold more than this machine's memory: the rows
// of probeRows times the widest feature set of widths, probeCopies copies
// of float32s.
func checkProbeFeatureMemory(stage string, qm *Manifest, pc ProbeParams, widths ...probeWidth) error {
	rows := probeRows(qm, pc)
	n := rows["train"] + rows["val"] + rows["test"]
	widest := slices.MaxFunc(widths, func(a, b probeWidth) int { return a.width - b.width })
	return checkMemory(stage, fmt.Sprintf("probe.max_train %d and probe.max_eval %d (%d train, %d val and %d test rows of %d floats: %s)",
		pc.MaxTrain, pc.MaxEval, rows["train"], rows["val"], rows["test"], widest.width, widest.what),
		"set or lower probe.max_train and probe.max_eval (or probe.max_per_shard)",
		memTerm{fmt.Sprintf("features, %d copies", probeCopies), probeCopies * 4 * float64(n) * float64(widest.width)})
}

// featureSource reads the Features shards a feature pipeline wrote into a
// folder, a layer (or a few, for a concatenation) at a time, keeping the
// first caps[split] records of each split in the order the stats list the
// shards (0 or absent: all).
type featureSource struct {
	ctx    context.Context
	dir    string
	caps   map[string]int
	seed   uint64
	shards map[int][]pipelines.ShardStats // per layer, in the stats' order
}

func openFeatures(ctx context.Context, dir string, caps map[string]int, seed uint64) (*featureSource, error) {
	st, err := pipelines.ReadDownloadStats(ctx, dir)
	if err != nil {
		return nil, err
	}
	fs := &featureSource{ctx: ctx, dir: dir, caps: caps, seed: seed, shards: map[int][]pipelines.ShardStats{}}
	for _, sh := range st.Shards {
		l, err := pipelines.FeaturesShardLayer(sh.Name, sh.Split)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		fs.shards[l] = append(fs.shards[l], sh)
	}
	if len(fs.shards) == 0 {
		return nil, fmt.Errorf("probe: %s holds no features", dir)
	}
	return fs, nil
}

// layers returns the layers written, in increasing order.
func (fs *featureSource) layers() []int { return slices.Sorted(maps.Keys(fs.shards)) }

// records counts the rows of layer 0 that sets keeps, over every split.
func (fs *featureSource) records() int64 {
	per := map[string]int64{}
	for _, sh := range fs.shards[fs.layers()[0]] {
		per[sh.Split] += sh.Records
	}
	var n int64
	for split, r := range per {
		if c := int64(fs.caps[split]); c > 0 && r > c {
			r = c
		}
		n += r
	}
	return n
}

// sets reads the given layers into one FeatureSet per split.
func (fs *featureSource) sets(layers ...int) (map[string]*probe.FeatureSet, error) {
	sets := map[string]*probe.FeatureSet{}
	for _, l := range layers {
		for _, sh := range fs.shards[l] {
			if sets[sh.Split] == nil {
				sets[sh.Split] = probe.NewFeatureSet(sh.Split)
			}
			set, c := sets[sh.Split], fs.caps[sh.Split]
			if c > 0 && set.Len(l) >= c {
				continue
			}
			err := pipelines.ScanShard(fs.ctx, storage.Join(fs.dir, sh.Name), func(f records.Features) error {
				if c > 0 && set.Len(f.Layer) >= c {
					return io.EOF
				}
				return set.Add(f)
			})
			if err != nil {
				return nil, err
			}
		}
	}
	if sets["train"] == nil || sets["test"] == nil {
		return nil, fmt.Errorf("probe: features need a train and a test split, found %v", keysOf(sets))
	}
	return sets, nil
}

// splits reads the given layers and assembles their splits (a seeded
// tenth of train is the validation split when there is no val split).
func (fs *featureSource) splits(layers ...int) (map[int]probe.Split, error) {
	sets, err := fs.sets(layers...)
	if err != nil {
		return nil, err
	}
	return probe.AssembleSplits(sets["train"], sets["val"], sets["test"], 0.1, fs.seed)
}

// split reads one layer's splits.
func (fs *featureSource) split(layer int) (probe.Split, error) {
	m, err := fs.splits(layer)
	if err != nil {
		return probe.Split{}, err
	}
	return m[layer], nil
}

// keys returns the keys of each split (those of the first layer).
func (fs *featureSource) keys() (map[string][]string, error) {
	sets, err := fs.sets(fs.layers()[0])
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for split, set := range sets {
		out[split], _ = set.Keys()
	}
	return out, nil
}

// downloadImageShape returns the size of the first image of the download
// output dl (the raw-pixel baseline's width at the original size).
func downloadImageShape(ctx context.Context, dl *Manifest) (h, w, c int, err error) {
	for _, f := range dl.Files {
		if f.Split == "" {
			continue
		}
		err := pipelines.ScanShard(ctx, dl.Path(f.Name), func(img records.Image) error {
			h, w, c = img.H, img.W, img.C
			return io.EOF
		})
		if err != nil {
			return 0, 0, 0, err
		}
		if h > 0 {
			return h, w, c, nil
		}
	}
	return 0, 0, 0, fmt.Errorf("download output %s has no images", dl.Dir)
}
