package pipelines

import (
	"context"

	"github.com/igpt/igpt/internal/records"
)

// ScanShard streams the records of the shard at path (local or gs://) to
// fn; fn may return io.EOF to stop early. It is records.ScanFile, the one
// shard reader, under the name the stages use.
func ScanShard[T records.Record](ctx context.Context, path string, fn func(T) error) error {
	return records.ScanFile(ctx, path, fn)
}

// WriteTokens writes Tokens records, in order, as the file name in dir.
func WriteTokens(ctx context.Context, dir, name string, toks []records.Tokens) (ShardStats, error) {
	return writeNamedShard(ctx, dir, name, "", records.KindTokens, toks, func(x *records.Tokens) int { return x.Label })
}
