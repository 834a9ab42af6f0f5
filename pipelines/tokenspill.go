package pipelines

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
)

func init() {
	register.DoFn4x1[context.Context, string, func(*string) bool, func(string), error](&WriteTokensShardFn{})
	register.Emitter2[string, string]()
	register.Iter1[string]()
}

// TokenPiecesDir is the folder, inside a token stage's output, where its
// workers spill each input shard's Tokens, one piece per output shard,
// before the writers gather them; the stage removes it once its shards
// are written.
const TokenPiecesDir = "_pieces"

// TokenPieceName names the piece of output shard key (a ShardKey) that the
// idx-th input shard spilled.
func TokenPieceName(key string, idx int) (string, error) {
	split, i, err := parseShardKey(key)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s-%05d-from-%05d.msgpack", split, i, idx), nil
}

// tokenSpill buckets the Tokens of one input shard by output shard and
// writes each bucket as a piece: the shuffle of the token stages goes
// through storage, so that only piece names cross the GroupByKey (prism
// holds whatever crosses one in memory; Dataflow's shuffle does not, but
// the pieces cost it nothing). It holds one input shard's tokens, at most
// the pixels of a download shard (download.shard_mib).
type tokenSpill struct {
	dir     string // the stage's output folder
	idx     int    // the input shard's index
	buckets map[string][]records.Tokens
}

func newTokenSpill(dir string, idx int) *tokenSpill {
	return &tokenSpill{dir: dir, idx: idx, buckets: map[string][]records.Tokens{}}
}

func (sp *tokenSpill) add(key string, t records.Tokens) { sp.buckets[key] = append(sp.buckets[key], t) }

// flush writes every bucket as a piece, one at a time in key order, and
// emits (output shard key, piece path) for each. A retried input shard
// rewrites the same pieces.
func (sp *tokenSpill) flush(ctx context.Context, emit func(string, string)) error {
	for _, key := range slices.Sorted(maps.Keys(sp.buckets)) {
		name, err := TokenPieceName(key, sp.idx)
		if err != nil {
			return err
		}
		path := storage.Join(sp.dir, TokenPiecesDir, name)
		split, _, _ := strings.Cut(key, "|")
		if _, err := writeNamedShard(ctx, storage.Join(sp.dir, TokenPiecesDir), name, split, records.KindTokens, sp.buckets[key],
			func(x *records.Tokens) int { return x.Label }); err != nil {
			return fmt.Errorf("spill %s: %w", path, err)
		}
		delete(sp.buckets, key)
		emit(key, path)
	}
	return nil
}

// writeTokenShards groups the pieces (KV of ShardKey and piece path) of
// every output shard, writes each shard in seeded-shuffle order with w,
// fills the empty shards and writes StatsName: the tail that quantize and
// vqvae-encode share. It returns the stats of every shard written.
func writeTokenShards(s beam.Scope, pieces beam.PCollection, w *WriteTokensShardFn) beam.PCollection {
	grouped := beam.GroupByKey(s.Scope("GroupPieces"), pieces)
	written := beam.ParDo(s.Scope("WriteShards"), w, grouped)
	return writeStats(s, &WriteStatsFn{Dir: w.Dir, Shards: w.Shards}, written)
}

// readPieces reads the Tokens of the given pieces (each once, in name
// order).
func readPieces(ctx context.Context, paths []string) ([]records.Tokens, error) {
	slices.Sort(paths)
	var toks []records.Tokens
	for _, p := range slices.Compact(paths) {
		if err := records.ScanFile(ctx, p, func(t records.Tokens) error { toks = append(toks, t); return nil }); err != nil {
			return nil, err
		}
	}
	return toks, nil
}
