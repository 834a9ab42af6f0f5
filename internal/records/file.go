package records

import (
	"context"
	"fmt"

	"github.com/igpt/igpt/internal/storage"
)

// The one way igpt reads and writes a shard file (local or gs://):
// ScanFile streams its records, ShardFile writes one atomically (the file
// appears only on Close; Abort leaves nothing).

// ScanFile streams the records of the shard at path to fn, checking ctx
// between records; fn may return io.EOF to stop early.
func ScanFile[T Record](ctx context.Context, path string, fn func(T) error) error {
	return ScanFileWhere(ctx, path, nil, fn)
}

// ScanFileWhere streams to fn the records of the shard at path whose key
// keep accepts (keep nil: all), decoding the others no further than their
// key (ScanWhere), checking ctx between records; fn may return io.EOF to
// stop early.
func ScanFileWhere[T Record](ctx context.Context, path string, keep func(key string) bool, fn func(T) error) error {
	rc, err := storage.Open(ctx, path)
	if err != nil {
		return err
	}
	defer rc.Close()
	if keep != nil {
		// A cancelled scan stops at the next record, kept or not: the
		// record goes to the wrapper below, which returns ctx's error.
		keep0 := keep
		keep = func(key string) bool { return ctx.Err() != nil || keep0(key) }
	}
	return ScanWhere(rc, path, keep, func(x T) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(x)
	})
}

// ShardFile is a shard being written to a file, with the count of its
// records per label.
type ShardFile struct {
	w      *storage.Writer
	rw     *Writer
	Labels map[int]int64 // records written per label
}

// CreateShard starts the shard of records of kind at path.
func CreateShard(ctx context.Context, path string, kind Kind) (*ShardFile, error) {
	w, err := storage.Create(ctx, path)
	if err != nil {
		return nil, err
	}
	rw, err := NewWriter(w, kind)
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("write %s: %w", w.Path(), err)
	}
	return &ShardFile{w: w, rw: rw, Labels: map[int]int64{}}, nil
}

// Path returns the shard's path.
func (f *ShardFile) Path() string { return f.w.Path() }

// Write appends one record, counted under label; on error the caller
// should Abort.
func (f *ShardFile) Write(v any, label int) error {
	if err := f.rw.Write(v); err != nil {
		return fmt.Errorf("write %s: %w", f.w.Path(), err)
	}
	f.Labels[label]++
	return nil
}

// Close flushes and publishes the shard and returns its record count and
// bytes; on error nothing is published.
func (f *ShardFile) Close() (records int64, bytes int64, err error) {
	if err := f.rw.Flush(); err != nil {
		f.w.Abort()
		return 0, 0, fmt.Errorf("write %s: %w", f.w.Path(), err)
	}
	if err := f.w.Close(); err != nil {
		return 0, 0, err
	}
	return int64(f.rw.Count()), f.rw.Bytes(), nil
}

// Abort discards the shard.
func (f *ShardFile) Abort() { f.w.Abort() }
