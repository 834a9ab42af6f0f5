package pipelines

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/vqvae"
)

func init() {
	register.Function1x1(shardLine)
}

// shardLine names a written shard and its record count, for passert.
func shardLine(st ShardStats) string { return fmt.Sprintf("%s:%d", st.Name, st.Records) }

// TestWriteStatsFnFillsEmptyShards runs WriteStatsFn on prism: the shard
// indices of a split that received no record are written as empty Tokens
// shards, and every shard, written or filled, comes out of the composite.
func TestWriteStatsFnFillsEmptyShards(t *testing.T) {
	written := func(split string, idx, n int, recs int64) string {
		return shardEvent(ShardStats{Name: records.ShardName(split, idx, n), Split: split, Records: recs, Labels: map[int]int64{0: recs}})
	}
	for _, tc := range []struct {
		name   string
		shards map[string]int
		events []string
		want   []string // shard:records
	}{
		{"no counts: only what was written", nil,
			[]string{written("train", 1, 3, 5), skippedEvent("bad.png: truncated")},
			[]string{records.ShardName("train", 1, 3) + ":5"}},
		{"fills the missing indices", map[string]int{"train": 3, "val": 2},
			[]string{written("train", 1, 3, 5), written("val", 0, 2, 2)},
			[]string{
				records.ShardName("train", 0, 3) + ":0", records.ShardName("train", 1, 3) + ":5", records.ShardName("train", 2, 3) + ":0",
				records.ShardName("val", 0, 2) + ":2", records.ShardName("val", 1, 2) + ":0",
			}},
		{"a split with no record at all stays absent", map[string]int{"train": 2, "test": 2},
			[]string{written("train", 0, 2, 1), written("train", 1, 2, 1)},
			[]string{records.ShardName("train", 0, 2) + ":1", records.ShardName("train", 1, 2) + ":1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p, s := beam.NewPipelineWithRoot()
			out := writeStats(s, &WriteStatsFn{Dir: dir, Shards: tc.shards}, beam.CreateList(s, tc.events))
			passert.Equals(s, beam.ParDo(s, shardLine, out), toAny(tc.want)...)
			ptest.RunAndValidate(t, p)
			for _, w := range tc.want {
				name := w[:len(w)-2]
				if w[len(w)-2:] != ":0" {
					continue
				}
				n := 0
				if err := records.ScanFile(context.Background(), filepath.Join(dir, name), func(records.Tokens) error { n++; return nil }); err != nil || n != 0 {
					t.Fatalf("filled shard %s: %d records, %v; want an empty Tokens shard", name, n, err)
				}
			}
		})
	}
}

func toAny(xs []string) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// TestQuantizeFnCarvesVal runs QuantizeFn on prism: a seeded fraction of
// the train split, and nothing of any other split, goes to val; each
// record lands in the piece of its output shard.
func TestQuantizeFnCarvesVal(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	pal, err := records.EncodePalette(&records.Palette{K: 2, Centres: [][3]float32{{0, 0, 0}, {255, 255, 255}}})
	if err != nil {
		t.Fatal(err)
	}
	palPath := filepath.Join(dir, "palette.msgpack")
	if err := storage.WriteFile(ctx, palPath, pal); err != nil {
		t.Fatal(err)
	}
	var inputs []string
	keys := map[string][]string{}
	for _, split := range []string{"train", "test"} {
		var imgs []records.Image
		for i := range 40 {
			k := fmt.Sprintf("%s/%03d", split, i)
			keys[split] = append(keys[split], k)
			imgs = append(imgs, records.Image{Key: k, H: 1, W: 2, C: 3, Pix: []byte{0, 0, 0, 255, 255, 255}})
		}
		st, err := writeShard(ctx, dir, split, 0, 1, records.KindImage, imgs, func(x *records.Image) int { return x.Label })
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, fmt.Sprintf(`{"index":%d,"input":{"path":%q,"split":%q}}`, len(inputs), filepath.Join(dir, st.Name), split))
	}
	const seed = 7
	for _, tc := range []struct {
		name     string
		fraction float64
		wantVal  func(key string) bool
	}{
		{"none", 0, func(string) bool { return false }},
		{"a third", 0.3, func(k string) bool { return unitHash(seed, "val", k) < 0.3 }},
		{"all", 1, func(string) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			val := 0
			for split, ks := range keys {
				for _, k := range ks {
					out := split
					if split == "train" && tc.wantVal(k) {
						out, val = "val", val+1
					}
					want = append(want, out+"/"+k)
				}
			}
			if tc.fraction == 0.3 && (val < 4 || val > 24) {
				t.Fatalf("fraction 0.3 of 40 keys carves %d", val)
			}
			sort.Strings(want)
			out := t.TempDir()
			shards := map[string]int{"train": 2, "val": 2, "test": 2}
			p, s := beam.NewPipelineWithRoot()
			beam.ParDo(s, &QuantizeFn{Palette: palPath, ValFraction: tc.fraction, Seed: seed, Shards: shards, Dir: out},
				beam.CreateList(s, inputs))
			ptest.RunAndValidate(t, p)
			pieces, _ := filepath.Glob(filepath.Join(out, TokenPiecesDir, "*"))
			var got []string
			for _, piece := range pieces {
				err := records.ScanFile(ctx, piece, func(tok records.Tokens) error {
					key, _ := routeTokens(seed, tc.fraction, shards, strings.Split(tok.Key, "/")[0], tok.Key)
					if name, _ := TokenPieceName(key, 0); !strings.HasPrefix(filepath.Base(piece), strings.SplitN(name, "-from-", 2)[0]) {
						t.Errorf("%s in piece %s, its shard is %s", tok.Key, piece, key)
					}
					split, _, _ := parseShardKey(key)
					got = append(got, split+"/"+tok.Key)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			sort.Strings(got)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("records by split %v, want %v", got, want)
			}
		})
	}
}

// TestVQEncoderKeepsOneGraph: encoding input shards whose last batches
// have many sizes leaves the model with the full batch's graph only (each
// size's activations were kept before: memory followed the number of
// shards, up to one graph per batch size).
func TestVQEncoderKeepsOneGraph(t *testing.T) {
	cfg := vqvae.Config{Hidden: 4, ResHidden: 2, ResBlocks: 1, K: 8, D: 2, Factor: 4, Beta: 0.25, Decay: 0.99, Epsilon: 1e-5}
	m, err := vqvae.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	before := m.CachedGraphs()
	enc := NewVQEncoder(m, [2]int{}, 4)
	img := records.Image{Key: "k", H: 8, W: 8, C: 3, Pix: make([]byte, 8*8*3)}
	for shard := 1; shard <= 7; shard++ { // 7 shards of 1..7 images: last batches of 1, 2, 3 images
		for range shard {
			if err := enc.Add(img); err != nil {
				t.Fatal(err)
			}
			if enc.Full() {
				if _, err := enc.Flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := enc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.CachedGraphs(); got > before+1 {
		t.Fatalf("the model holds %d graphs after last batches of several sizes, want at most %d", got, before+1)
	}
}
