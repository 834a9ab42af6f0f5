// Package storage is igpt's one file API over local paths and gs://
// objects. Beam's filesystem registry does the I/O underneath, so the same
// code runs in the driver, in prism's in-process workers and on Dataflow.
//
// Writes are atomic: a local file is written under a temporary name in the
// same directory and renamed on Close; a GCS object only appears when its
// writer closes. Reads and metadata calls retry transient errors with
// exponential backoff.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	gcs "cloud.google.com/go/storage"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs" // registers gs://
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
)

// ErrNotExist is returned (wrapped) for a missing file or object.
var ErrNotExist = fs.ErrNotExist

// IsGCS reports whether p names a GCS object.
func IsGCS(p string) bool { return strings.HasPrefix(p, "gs://") }

// Join joins path elements with "/" for gs:// and the OS separator locally.
func Join(base string, elem ...string) string {
	if IsGCS(base) {
		return strings.TrimSuffix(base, "/") + "/" + path.Join(elem...)
	}
	return filepath.Join(append([]string{base}, elem...)...)
}

// Base returns the last element of p.
func Base(p string) string {
	if IsGCS(p) {
		return path.Base(p)
	}
	return filepath.Base(p)
}

// Dir returns all but the last element of p.
func Dir(p string) string {
	if IsGCS(p) {
		i := strings.LastIndex(strings.TrimSuffix(p, "/"), "/")
		return p[:i]
	}
	return filepath.Dir(p)
}

type fsKey struct{ scheme, emulator string }

var (
	fsMu    sync.Mutex
	fsCache = map[fsKey]filesystem.Interface{}
)

// fsFor returns a cached Beam filesystem for p's scheme. GCS clients are
// cached per STORAGE_EMULATOR_HOST so tests can start fresh emulators.
func fsFor(ctx context.Context, p string) (filesystem.Interface, error) {
	key := fsKey{scheme: "local"}
	if IsGCS(p) {
		key = fsKey{"gs", os.Getenv("STORAGE_EMULATOR_HOST")}
	}
	fsMu.Lock()
	defer fsMu.Unlock()
	if f, ok := fsCache[key]; ok {
		return f, nil
	}
	f, err := filesystem.New(context.WithoutCancel(ctx), p)
	if err != nil {
		return nil, fmt.Errorf("storage: %s: %w", p, err)
	}
	fsCache[key] = f
	return f, nil
}

func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, gcs.ErrObjectNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func wrap(op, p string, err error) error {
	if err == nil {
		return nil
	}
	if notExist(err) && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: %s %s: %w (%w)", op, p, fs.ErrNotExist, err)
	}
	return fmt.Errorf("storage: %s %s: %w", op, p, err)
}

// Open opens p for reading.
func Open(ctx context.Context, p string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := retry(ctx, func() (err error) {
		rc, err = openOnce(ctx, p)
		return err
	})
	return rc, wrap("open", p, err)
}

func openOnce(ctx context.Context, p string) (io.ReadCloser, error) {
	f, err := fsFor(ctx, p)
	if err != nil {
		return nil, err
	}
	rc, err := f.OpenRead(ctx, p)
	if err != nil || !IsGCS(p) {
		return rc, err
	}
	return countReads(p, rc), nil
}

// ReadFile reads all of p.
func ReadFile(ctx context.Context, p string) ([]byte, error) {
	var data []byte
	err := retry(ctx, func() error {
		rc, err := openOnce(ctx, p)
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = io.ReadAll(rc)
		return err
	})
	if err != nil {
		return nil, wrap("read", p, err)
	}
	return data, nil
}

// Size returns p's size in bytes.
func Size(ctx context.Context, p string) (int64, error) {
	if !IsGCS(p) {
		st, err := os.Stat(p)
		if err != nil {
			return 0, wrap("stat", p, err)
		}
		return st.Size(), nil
	}
	var n int64
	err := retry(ctx, func() error {
		f, err := fsFor(ctx, p)
		if err != nil {
			return err
		}
		n, err = f.Size(ctx, p)
		return err
	})
	return n, wrap("stat", p, err)
}

// Exists reports whether p exists.
func Exists(ctx context.Context, p string) (bool, error) {
	_, err := Size(ctx, p)
	if err == nil {
		return true, nil
	}
	if notExist(err) {
		return false, nil
	}
	return false, err
}

// List returns every file under the directory or prefix dir, recursively,
// sorted. Temporary files of unfinished local writes are left out.
func List(ctx context.Context, dir string) ([]string, error) {
	if !IsGCS(dir) {
		var out []string
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == dir && errors.Is(err, fs.ErrNotExist) {
					return fs.SkipAll
				}
				return err
			}
			if !d.IsDir() && !isTemp(d.Name()) {
				out = append(out, p)
			}
			return nil
		})
		return out, wrap("list", dir, err)
	}
	var out []string
	err := retry(ctx, func() error {
		f, err := fsFor(ctx, dir)
		if err != nil {
			return err
		}
		out, err = f.List(ctx, strings.TrimSuffix(dir, "/")+"/**")
		return err
	})
	sort.Strings(out)
	return out, wrap("list", dir, err)
}

// Remove deletes p. A missing p is not an error.
func Remove(ctx context.Context, p string) error {
	err := retry(ctx, func() error {
		f, err := fsFor(ctx, p)
		if err != nil {
			return err
		}
		rm, ok := f.(filesystem.Remover)
		if !ok {
			return fmt.Errorf("filesystem of %s cannot remove", p)
		}
		if err := rm.Remove(ctx, p); err != nil && !notExist(err) {
			return err
		}
		return nil
	})
	return wrap("remove", p, err)
}

// RemoveAll deletes every file under dir.
func RemoveAll(ctx context.Context, dir string) error {
	if !IsGCS(dir) {
		return wrap("remove", dir, os.RemoveAll(dir))
	}
	files, err := List(ctx, dir)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := Remove(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// Rename moves a file, locally by rename and on GCS by copy then delete.
func Rename(ctx context.Context, from, to string) error {
	if IsGCS(from) != IsGCS(to) {
		return fmt.Errorf("storage: rename %s to %s: cannot rename across filesystems", from, to)
	}
	if !IsGCS(from) {
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return wrap("rename", to, err)
		}
		return wrap("rename", from, os.Rename(from, to))
	}
	err := retry(ctx, func() error {
		f, err := fsFor(ctx, from)
		if err != nil {
			return err
		}
		return f.(filesystem.Renamer).Rename(ctx, from, to)
	})
	return wrap("rename", from, err)
}

// Copy copies src to dst (across filesystems too); dst appears atomically.
func Copy(ctx context.Context, src, dst string) error {
	return wrap("copy", src, copyRetry(ctx, src, dst))
}

func copyRetry(ctx context.Context, src, dst string) error {
	return retry(ctx, func() error {
		in, err := openOnce(ctx, src)
		if err != nil {
			return err
		}
		defer in.Close()
		w, err := Create(ctx, dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, in); err != nil {
			w.Abort()
			return err
		}
		return w.Close()
	})
}

// WriteFile writes data to p atomically.
func WriteFile(ctx context.Context, p string, data []byte) error {
	return retry(ctx, func() error {
		w, err := Create(ctx, p)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			w.Abort()
			return err
		}
		return w.Close()
	})
}

const tempMarker = ".igpt-tmp-"

// GCSWriteBuffer is the memory each open gs:// Writer holds: the upload
// chunk the client buffers (and resends on a retry). The client's default
// is 16 MiB; a probe worker writes a shard per layer at once (25 for
// iGPT-S), so it is set lower: objects larger than this upload in chunks.
// Stages count it in their memory (docs/memory.md).
const GCSWriteBuffer = 4 << 20

func isTemp(name string) bool { return strings.Contains(name, tempMarker) }

// Writer writes one file atomically: Close publishes it, Abort discards it.
type Writer struct {
	path   string
	tmp    string // local only
	w      io.WriteCloser
	cancel context.CancelFunc
	done   bool
}

// Create opens p for writing. Nothing is visible at p until Close succeeds.
func Create(ctx context.Context, p string) (*Writer, error) {
	if !IsGCS(p) {
		dir := filepath.Dir(p)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, wrap("create", p, err)
		}
		f, err := os.CreateTemp(dir, "."+filepath.Base(p)+tempMarker+"*")
		if err != nil {
			return nil, wrap("create", p, err)
		}
		return &Writer{path: p, tmp: f.Name(), w: f}, nil
	}
	f, err := fsFor(ctx, p)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := f.OpenWrite(wctx, p)
	if err != nil {
		cancel()
		return nil, wrap("create", p, err)
	}
	if gw, ok := w.(*gcs.Writer); ok {
		gw.ChunkSize = GCSWriteBuffer
	}
	return &Writer{path: p, w: w, cancel: cancel}, nil
}

// Path is where the file appears on Close.
func (w *Writer) Path() string { return w.path }

func (w *Writer) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	if err != nil {
		return n, wrap("write", w.path, err)
	}
	return n, nil
}

// Close flushes and publishes the file.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.tmp == "" {
		err := w.w.Close()
		w.cancel()
		return wrap("close", w.path, err)
	}
	f := w.w.(*os.File)
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes files 0600
		f.Close()
		os.Remove(w.tmp)
		return wrap("chmod", w.path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(w.tmp)
		return wrap("sync", w.path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(w.tmp)
		return wrap("close", w.path, err)
	}
	if err := os.Rename(w.tmp, w.path); err != nil {
		os.Remove(w.tmp)
		return wrap("publish", w.path, err)
	}
	return nil
}

// Abort discards everything written; nothing appears at Path.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.tmp == "" {
		w.cancel() // a cancelled GCS upload never creates the object
		w.w.Close()
		return
	}
	w.w.Close()
	os.Remove(w.tmp)
}
