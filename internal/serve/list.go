package serve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/igpt/igpt/internal/storage"
)

// entry is one name in a folder: a subfolder, or a file with its size and
// modification time.
type entry struct {
	name string
	dir  bool
	size int64
	mod  time.Time
}

// lister lists one level of a folder, locally or on GCS (one listing with
// a "/" delimiter: no object is read). Symlinks are left out locally: the
// server never follows one.
type lister struct {
	mu     sync.Mutex
	client *gcs.Client
}

func (l *lister) gcsClient(ctx context.Context) (*gcs.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client == nil {
		c, err := gcs.NewClient(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("serve: GCS client: %w", err)
		}
		l.client = c
	}
	return l.client, nil
}

// splitGCS splits gs://bucket/object.
func splitGCS(p string) (bucket, object string, err error) {
	bucket, object, _ = strings.Cut(strings.TrimPrefix(p, "gs://"), "/")
	if bucket == "" {
		return "", "", fmt.Errorf("serve: %q has no bucket (want gs://bucket/prefix)", p)
	}
	return bucket, object, nil
}

// list returns dir's entries; a missing folder has none.
func (l *lister) list(ctx context.Context, dir string) ([]entry, error) {
	if !strings.HasPrefix(dir, "gs://") {
		des, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("serve: list %s: %w", dir, err)
		}
		out := make([]entry, 0, len(des))
		for _, d := range des {
			if d.Type()&fs.ModeSymlink != 0 {
				continue
			}
			e := entry{name: d.Name(), dir: d.IsDir()}
			if !e.dir {
				if fi, err := d.Info(); err == nil {
					e.size, e.mod = fi.Size(), fi.ModTime()
				}
			}
			out = append(out, e)
		}
		return out, nil
	}
	c, err := l.gcsClient(ctx)
	if err != nil {
		return nil, err
	}
	bucket, prefix, err := splitGCS(dir)
	if err != nil {
		return nil, err
	}
	if prefix = strings.TrimSuffix(prefix, "/"); prefix != "" {
		prefix += "/"
	}
	it := c.Bucket(bucket).Objects(ctx, &gcs.Query{Prefix: prefix, Delimiter: "/"})
	var out []entry
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("serve: list %s: %w", dir, err)
		}
		if a.Prefix != "" {
			out = append(out, entry{name: strings.TrimSuffix(strings.TrimPrefix(a.Prefix, prefix), "/"), dir: true})
			continue
		}
		out = append(out, entry{name: strings.TrimPrefix(a.Name, prefix), size: a.Size, mod: a.Updated})
	}
}

// insideRoot reports whether local path p, with every symlink resolved,
// lies inside root (also resolved). A path that does not exist is not.
func insideRoot(root, p string) bool {
	if strings.HasPrefix(root, "gs://") {
		return true // no symlinks on GCS; names are checked before
	}
	r, err := filepath.EvalSymlinks(root)
	if err != nil {
		return false
	}
	_, err = storage.ResolveUnder(r, p)
	return err == nil
}
