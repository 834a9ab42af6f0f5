package stages

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/pipelines"
)

// tokenManifest is a token output's manifest of the given shards per
// split, each of records records.
func tokenManifest(shards map[string]int, perShard int64) *Manifest {
	m := &Manifest{Stage: "quantize"}
	for _, split := range []string{"train", "val", "test"} {
		for i := range shards[split] {
			m.Files = append(m.Files, FileInfo{Name: fmt.Sprintf("%s-%05d.msgpack", split, i), Split: split, Records: perShard})
		}
	}
	return m
}

// TestProbeFeatureMemoryFollowsTheCaps: with probe.max_train and
// probe.max_eval the rows the probe's driver holds, and so its feature
// memory, are the caps whatever the dataset's size; without them they
// follow the data, and a probe that would not fit is refused before any
// feature is extracted, naming the keys to set.
func TestProbeFeatureMemoryFollowsTheCaps(t *testing.T) {
	defer func(f func() (float64, bool)) { machineMemory = f }(machineMemory)
	machineMemory = func() (float64, bool) { return 23e9, true }
	small := tokenManifest(map[string]int{"train": 5, "val": 1, "test": 2}, 8192)
	large := tokenManifest(map[string]int{"train": 157, "val": 2, "test": 7}, 8192) // ImageNet's 1.28M train images
	capped := ProbeParams{MaxTrain: 4000, MaxEval: 2000}
	for _, m := range []*Manifest{small, large} {
		rows := probeRows(m, capped)
		if rows["train"] != 4000 || rows["val"] != 2000 || rows["test"] != 2000 {
			t.Errorf("%d token files: rows %v with max_train 4000 and max_eval 2000", len(m.Files), rows)
		}
	}
	// max_per_shard alone follows the number of shards.
	if s, l := probeRows(small, ProbeParams{MaxPerShard: 100}), probeRows(large, ProbeParams{MaxPerShard: 100}); s["train"] != 500 || l["train"] != 15700 {
		t.Errorf("max_per_shard 100: train rows %d and %d, want 500 and 15700", s["train"], l["train"])
	}
	// The shards' share of the caps: the workers read no more.
	if per := probeShardCaps(large, capped); per["train"] != 26 || per["val"] != 1000 || per["test"] != 286 {
		t.Errorf("per-shard caps %v", per)
	}
	const d = 512 // iGPT-S
	if err := checkProbeFeatureMemory("probe", large, ProbeParams{MaxTrain: 100000, MaxEval: 50000}, probeWidth{"a layer", d}); err != nil {
		t.Errorf("capped: %v", err)
	}
	err := checkProbeFeatureMemory("probe", large, ProbeParams{}, probeWidth{"a layer", d}, probeWidth{"probe.concat", 5 * d})
	for _, want := range []string{"probe: probe.max_train 0 and probe.max_eval 0 (1286144 train, 16384 val and 57344 test rows of 2560 floats: probe.concat)",
		"needs about 55.7 GB", "but this machine has 23.0 GB", "set or lower probe.max_train and probe.max_eval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("uncapped: %v, want it to say %q", err, want)
		}
	}
}

// TestFeatureSourceReadsOneLayer: the driver reads only the layers it
// asks for, and keeps the first max_train and max_eval records of each
// split in the order the stats list the shards.
func TestFeatureSourceReadsOneLayer(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var st pipelines.DownloadStats
	for _, split := range []string{"train", "test"} {
		for idx := range 2 {
			for l := range 3 {
				name := pipelines.FeaturesShardName(split, l, idx)
				f, err := records.CreateShard(ctx, filepath.Join(dir, name), records.KindFeatures)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 4 {
					key := fmt.Sprintf("%s-%d-%d", split, idx, i)
					if err := f.Write(&records.Features{Key: key, Label: i % 2, Layer: l, Vec: []float32{float32(l), float32(i), 1}}, i%2); err != nil {
						t.Fatal(err)
					}
				}
				n, b, err := f.Close()
				if err != nil {
					t.Fatal(err)
				}
				st.Shards = append(st.Shards, pipelines.ShardStats{Name: name, Split: split, Records: n, Bytes: b})
			}
		}
	}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, pipelines.StatsName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := openFeatures(ctx, dir, probeCaps(ProbeParams{MaxTrain: 5, MaxEval: 3}), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(src.layers(), []int{0, 1, 2}) || src.records() != 5+3 {
		t.Fatalf("layers %v, records %d", src.layers(), src.records())
	}
	sets, err := src.sets(1)
	if err != nil {
		t.Fatal(err)
	}
	for split, set := range sets {
		if !slices.Equal(set.Layers(), []int{1}) {
			t.Fatalf("%s: layers %v read for layer 1", split, set.Layers())
		}
	}
	keys, _ := sets["train"].Keys()
	if !slices.Equal(keys, []string{"train-0-0", "train-0-1", "train-0-2", "train-0-3", "train-1-0"}) {
		t.Fatalf("train keys %v, want the first 5 in shard order", keys)
	}
	if k, _ := sets["test"].Keys(); len(k) != 3 {
		t.Fatalf("test keys %v, want 3", k)
	}
	sp, err := src.split(2)
	if err != nil {
		t.Fatal(err)
	}
	if sp.TrainX.Cols != 3 || sp.TrainX.Row(0)[0] != 2 || sp.TestX.Rows != 3 || sp.TrainX.Rows+sp.ValX.Rows != 5 {
		t.Fatalf("layer 2 split: train %d×%d (first %v), val %d, test %d", sp.TrainX.Rows, sp.TrainX.Cols, sp.TrainX.Row(0), sp.ValX.Rows, sp.TestX.Rows)
	}
	if _, err := pipelines.FeaturesShardLayer("train-layerX-00000.msgpack", "train"); err == nil {
		t.Fatal("a bad shard name was read as a layer")
	}
}
