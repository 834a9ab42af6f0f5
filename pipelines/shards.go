package pipelines

import (
	"context"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
)

// ScanShard streams the records of the shard at path (local or gs://) to
// fn; fn may return io.EOF to stop early.
func ScanShard[T records.Record](ctx context.Context, path string, fn func(T) error) error {
	rc, err := storage.Open(ctx, path)
	if err != nil {
		return err
	}
	defer rc.Close()
	return records.Scan(rc, path, fn)
}
