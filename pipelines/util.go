package pipelines

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"

	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/storage"
)

func isSkipped(err error) bool { return errors.Is(err, datasets.ErrSkipped) }

var localizeMu sync.Mutex

// localize returns a local path holding p's bytes: p itself when local, or
// a copy in the worker's temporary folder, fetched once per worker, when p
// is a gs:// object (the dataset readers need seekable local files).
func localize(ctx context.Context, p string) (string, error) {
	if !storage.IsGCS(p) {
		return p, nil
	}
	localizeMu.Lock()
	defer localizeMu.Unlock()
	sum := sha256.Sum256([]byte(p))
	local := filepath.Join(os.TempDir(), "igpt-localized", hex.EncodeToString(sum[:8]), storage.Base(p))
	size, err := storage.Size(ctx, p)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(local); err == nil && st.Size() == size {
		return local, nil
	}
	if err := storage.Copy(ctx, p, local); err != nil {
		return "", fmt.Errorf("download: fetch %s to this worker: %w", p, err)
	}
	return local, nil
}

// ReadDownloadStats reads the StatsName file the download pipeline wrote.
func ReadDownloadStats(ctx context.Context, dir string) (*DownloadStats, error) {
	p := storage.Join(dir, StatsName)
	b, err := storage.ReadFile(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("download: the pipeline finished without writing %s: %w", p, err)
	}
	var st DownloadStats
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("download: %s: %w", p, err)
	}
	return &st, nil
}

func reflectTypeOf[T any]() reflect.Type { return reflect.TypeOf((*T)(nil)).Elem() }
