package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
)

// gcsBytesRead counts, per bucket, the bytes this process has read from
// gs:// objects through this package: a launcher that only plans must leave
// the count of a source's bucket near zero.
var gcsBytesRead sync.Map // bucket → *atomic.Int64

// GCSBytesRead returns the bytes this process has read from objects of the
// bucket.
func GCSBytesRead(bucket string) int64 {
	if c, ok := gcsBytesRead.Load(bucket); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

type countingRC struct {
	io.ReadCloser
	n *atomic.Int64
}

func countReads(p string, rc io.ReadCloser) io.ReadCloser {
	b, _, _ := splitGCS(p)
	c, _ := gcsBytesRead.LoadOrStore(b, new(atomic.Int64))
	return countingRC{rc, c.(*atomic.Int64)}
}

func (c countingRC) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var (
	clientMu    sync.Mutex
	clientCache = map[string]*gcs.Client{}
)

// gcsClient returns a client for the current STORAGE_EMULATOR_HOST (the
// Go client reads that variable itself), cached per value.
func gcsClient(ctx context.Context) (*gcs.Client, error) {
	host := os.Getenv("STORAGE_EMULATOR_HOST")
	clientMu.Lock()
	defer clientMu.Unlock()
	if c, ok := clientCache[host]; ok {
		return c, nil
	}
	c, err := gcs.NewClient(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("storage: GCS client: %w", err)
	}
	clientCache[host] = c
	return c, nil
}

// splitGCS splits gs://bucket/object into its bucket and object names.
func splitGCS(p string) (bucket, object string, err error) {
	rest := strings.TrimPrefix(p, "gs://")
	bucket, object, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("storage: %q: no bucket (want gs://bucket/object)", p)
	}
	return bucket, object, nil
}

// OpenRange opens length bytes of p starting at off (length < 0: to the
// end), streaming: nothing is copied to local disk first.
func OpenRange(ctx context.Context, p string, off, length int64) (io.ReadCloser, error) {
	if !IsGCS(p) {
		f, err := os.Open(p)
		if err != nil {
			return nil, wrap("open", p, err)
		}
		if length < 0 {
			st, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, wrap("stat", p, err)
			}
			length = max(0, st.Size()-off)
		}
		return sectionRC{io.NewSectionReader(f, off, length), f}, nil
	}
	var rc io.ReadCloser
	err := retry(ctx, func() error {
		c, err := gcsClient(ctx)
		if err != nil {
			return err
		}
		b, o, err := splitGCS(p)
		if err != nil {
			return err
		}
		r, err := c.Bucket(b).Object(o).NewRangeReader(ctx, off, length)
		if err != nil {
			return err
		}
		rc = countReads(p, r)
		return nil
	})
	return rc, wrap("open", p, err)
}

type sectionRC struct {
	*io.SectionReader
	f *os.File
}

func (s sectionRC) Close() error { return s.f.Close() }

// ReaderAt is random access to one file or object of a known size. On GCS
// each ReadAt is one range request, so callers read in large pieces.
type ReaderAt struct {
	ctx  context.Context
	path string
	size int64
	f    *os.File // local only

	noCache  bool // GCS: fetch exactly what is asked (see NoCache)
	mu       sync.Mutex
	blockOff int64  // GCS: offset of the cached block
	block    []byte // GCS: the last block read, for small sequential reads
}

// readAtBlock is the size of the block a small GCS read fetches and keeps,
// so that a reader walking a zip directory or tar headers in small pieces
// makes one request per block, not one per piece.
const readAtBlock = 1 << 20

// OpenReaderAt opens p for random access.
func OpenReaderAt(ctx context.Context, p string) (*ReaderAt, error) {
	if !IsGCS(p) {
		f, err := os.Open(p)
		if err != nil {
			return nil, wrap("open", p, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, wrap("stat", p, err)
		}
		return &ReaderAt{ctx: ctx, path: p, size: st.Size(), f: f}, nil
	}
	size, err := Size(ctx, p)
	if err != nil {
		return nil, err
	}
	return &ReaderAt{ctx: ctx, path: p, size: size}, nil
}

// NoCache makes every read fetch exactly the bytes asked for: for walking
// the headers of an archive without reading its members' data.
func (r *ReaderAt) NoCache() { r.noCache = true }

// Size is the file's size in bytes.
func (r *ReaderAt) Size() int64 { return r.size }

// Path is the file's path.
func (r *ReaderAt) Path() string { return r.path }

// ReadAt reads len(b) bytes at off (io.ReaderAt).
func (r *ReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if r.f != nil {
		return r.f.ReadAt(b, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	if len(b) < readAtBlock/4 && !r.noCache {
		return r.readSmall(b, off)
	}
	return r.readRange(b, off)
}

// readSmall serves a small read from the cached block, fetching the block
// that starts at off when it is not there.
func (r *ReaderAt) readSmall(b []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.block == nil || off < r.blockOff || off+int64(len(b)) > r.blockOff+int64(len(r.block)) {
		n := min(int64(readAtBlock), r.size-off)
		buf := make([]byte, n)
		if _, err := r.readRange(buf, off); err != nil && err != io.EOF {
			return 0, err
		}
		r.block, r.blockOff = buf, off
	}
	n := copy(b, r.block[off-r.blockOff:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// readRange reads b at off with one range request.
func (r *ReaderAt) readRange(b []byte, off int64) (int, error) {
	n := int64(len(b))
	short := off+n > r.size
	if short {
		n = r.size - off
	}
	rc, err := OpenRange(r.ctx, r.path, off, n)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	got, err := io.ReadFull(rc, b[:n])
	if err == nil && short {
		err = io.EOF
	}
	return got, err
}

// Close releases the file.
func (r *ReaderAt) Close() error {
	if r.f != nil {
		return r.f.Close()
	}
	return nil
}

// ObjectInfo is a listed file: its path and size.
type ObjectInfo struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// ListSizes lists every file under the prefix or folder dir, with sizes,
// sorted by path. On GCS this is one listing: no object is read.
func ListSizes(ctx context.Context, dir string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	if !IsGCS(dir) {
		names, err := List(ctx, dir)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			st, err := os.Stat(n)
			if err != nil {
				return nil, wrap("stat", n, err)
			}
			out = append(out, ObjectInfo{n, st.Size()})
		}
		return out, nil
	}
	err := retry(ctx, func() error {
		out = out[:0]
		c, err := gcsClient(ctx)
		if err != nil {
			return err
		}
		b, prefix, err := splitGCS(dir)
		if err != nil {
			return err
		}
		it := c.Bucket(b).Objects(ctx, &gcs.Query{Prefix: prefix})
		for {
			a, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			if strings.HasSuffix(a.Name, "/") {
				continue
			}
			out = append(out, ObjectInfo{"gs://" + b + "/" + a.Name, a.Size})
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, wrap("list", dir, err)
}

// maxBraceExpansion bounds how many patterns one brace expression may make.
const maxBraceExpansion = 1 << 20

// Glob lists the files matching pattern, sorted, with sizes. The pattern is
// a path or gs:// URL whose last element may hold *, ? and [...] (path.Match)
// and brace expressions: {a,b,c} alternatives and {000000..000146} numeric
// ranges, zero-padded to the width written (the WebDataset convention). A
// pattern without wildcards names one file, which must exist.
func Glob(ctx context.Context, pattern string) ([]ObjectInfo, error) {
	pats, err := ExpandBraces(pattern)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []ObjectInfo
	listed := map[string][]ObjectInfo{}
	for _, p := range pats {
		dir, base := Dir(p), Base(p)
		if !strings.ContainsAny(base, "*?[") && !strings.ContainsAny(dir, "*?[") {
			if len(pats) > 64 { // many literal names: one listing beats many stats
				if err := matchListed(ctx, listed, dir, base, seen, &out); err != nil {
					return nil, err
				}
				continue
			}
			size, err := Size(ctx, p)
			if err != nil {
				return nil, err
			}
			if !seen[p] {
				seen[p] = true
				out = append(out, ObjectInfo{p, size})
			}
			continue
		}
		if strings.ContainsAny(dir, "*?[") {
			return nil, fmt.Errorf("storage: glob %s: wildcards are only allowed in the last path element", pattern)
		}
		if _, err := path.Match(base, ""); err != nil {
			return nil, fmt.Errorf("storage: glob %s: %w", pattern, err)
		}
		if err := matchListed(ctx, listed, dir, base, seen, &out); err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// matchListed adds the files directly in dir whose names match base.
func matchListed(ctx context.Context, listed map[string][]ObjectInfo, dir, base string, seen map[string]bool, out *[]ObjectInfo) error {
	files, ok := listed[dir]
	if !ok {
		all, err := ListSizes(ctx, dir)
		if err != nil {
			return err
		}
		for _, f := range all {
			if Dir(f.Path) == strings.TrimSuffix(dir, "/") || (!IsGCS(dir) && filepath.Dir(f.Path) == filepath.Clean(dir)) {
				files = append(files, f)
			}
		}
		listed[dir] = files
	}
	for _, f := range files {
		if ok, _ := path.Match(base, Base(f.Path)); ok && !seen[f.Path] {
			seen[f.Path] = true
			*out = append(*out, f)
		}
	}
	return nil
}

// ExpandBraces expands {a,b} alternatives and {lo..hi} numeric ranges
// (zero-padded to lo's width when lo has a leading zero), left to right.
func ExpandBraces(pattern string) ([]string, error) {
	open := strings.IndexByte(pattern, '{')
	if open < 0 {
		if strings.ContainsRune(pattern, '}') {
			return nil, fmt.Errorf("storage: pattern %q: '}' without '{'", pattern)
		}
		return []string{pattern}, nil
	}
	closeAt := strings.IndexByte(pattern[open:], '}')
	if closeAt < 0 {
		return nil, fmt.Errorf("storage: pattern %q: '{' without '}'", pattern)
	}
	closeAt += open
	body := pattern[open+1 : closeAt]
	var alts []string
	if lo, hi, ok := strings.Cut(body, ".."); ok && !strings.Contains(body, ",") {
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a < 0 || b < a {
			return nil, fmt.Errorf("storage: pattern %q: range {%s} must be {lo..hi} with 0 <= lo <= hi", pattern, body)
		}
		if b-a >= maxBraceExpansion {
			return nil, fmt.Errorf("storage: pattern %q: range {%s} has more than %d values", pattern, body, maxBraceExpansion)
		}
		width := 0
		if len(lo) > 1 && lo[0] == '0' {
			width = len(lo)
		}
		for i := a; i <= b; i++ {
			alts = append(alts, fmt.Sprintf("%0*d", width, i))
		}
	} else {
		alts = strings.Split(body, ",")
	}
	rest, err := ExpandBraces(pattern[closeAt+1:])
	if err != nil {
		return nil, err
	}
	if len(alts)*len(rest) > maxBraceExpansion {
		return nil, fmt.Errorf("storage: pattern %q expands to more than %d names", pattern, maxBraceExpansion)
	}
	out := make([]string, 0, len(alts)*len(rest))
	for _, a := range alts {
		for _, r := range rest {
			out = append(out, pattern[:open]+a+r)
		}
	}
	return out, nil
}
