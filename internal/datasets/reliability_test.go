package datasets

// The dataset-reading cases of the reliability suite (docs/reliability.md):
// each TestReliability<N>_… turns defect N of issue 15 into a test.

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"fmt"
	"hash/crc32"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/testutil"
	"golang.org/x/sync/semaphore"
)

// readSource inspects src as an image folder and reads every unit,
// returning the first error.
func readSource(ctx context.Context, spec Spec, src string) error {
	var l Layout
	var err error
	if ReadsInPlace(spec.Format) {
		l, err = InspectInPlace(ctx, spec, src, nil, Options{})
	} else {
		l, err = Inspect(ctx, spec, src, Options{})
	}
	if err != nil {
		return err
	}
	for _, u := range l.Units {
		if err := ReadUnit(ctx, u, func(Item) error { return nil }); err != nil {
			return err
		}
	}
	return nil
}

// TestReliability10_MemberNames: an absolute member (/data/imgs/x.png) used
// to become split "data", class "imgs"; two wrapper folders (w1/w2/train/…)
// were read as split "w2". Both are refused, naming the member, in every
// container a folder source can be, and absolute or climbing members of the
// in-place WebDataset format too.
func TestReliability10_MemberNames(t *testing.T) {
	ctx := context.Background()
	img := pngBytes(t, testImage(2, 2, gradient(0)))
	good := []entry{{name: "train/cat/a.png", data: img}, {name: "train/dog/b.png", data: img}}
	folder := Spec{Name: "folder", Format: FormatFolder}
	cases := []struct {
		name  string
		kinds []string
		spec  Spec
		es    []entry
		want  []string
	}{
		{"absolute member", []string{"tar", "tar.gz", "zip"}, folder,
			append(good, entry{name: "/data/imgs/x.png", data: img}), []string{`member "/data/imgs/x.png" is an absolute path`}},
		{"climbing member", []string{"tar", "zip"}, folder,
			append(good, entry{name: "train/../../x.png", data: img}), []string{`member "train/../../x.png" climbs out`}},
		{"two wrapper folders", []string{"dir", "tar", "zip"}, folder,
			[]entry{{name: "w1/w2/train/cat/a.png", data: img}, {name: "w1/w2/test/dog/b.png", data: img}},
			[]string{"member w1/w2/", "w1/w2/ is a second wrapper folder around the split folder"}},
		{"two wrapper folders, one split", []string{"dir"}, folder,
			[]entry{{name: "w1/w2/train/cat/a.png", data: img}, {name: "w1/w2/train/cat/b.png", data: img}},
			[]string{"w1/w2/ is a second wrapper folder"}},
		{"webdataset absolute member", []string{"tar"}, Spec{Name: "webdataset", Format: FormatWebDataset},
			[]entry{{name: "s0.png", data: img}, {name: "s0.cls", data: []byte("1")}, {name: "/etc/s1.png", data: img}},
			[]string{`member "/etc/s1.png" is an absolute path`}},
	}
	for _, c := range cases {
		for _, kind := range c.kinds {
			t.Run(c.name+" "+kind, func(t *testing.T) {
				src := filepath.Join(t.TempDir(), "src."+kind)
				switch kind {
				case "dir":
					writeTree(t, src, c.es)
				case "tar", "tar.gz":
					writeFile(t, src, tarBytes(t, kind == "tar.gz", c.es))
				case "zip":
					writeFile(t, src, zipBytes(t, c.es))
				}
				err := readSource(ctx, c.spec, src)
				mustContain(t, err, append(c.want, src)...)
			})
		}
	}
	// The same layouts without the bad member still read.
	src := writeFile(t, filepath.Join(t.TempDir(), "ok.tar"), tarBytes(t, false, append(good, entry{name: "./", dir: true})))
	if err := readSource(ctx, folder, src); err != nil {
		t.Errorf("a clean archive: %v", err)
	}
	dir := t.TempDir()
	writeTree(t, dir, []entry{{name: "w1/train/cat/a.png", data: img}, {name: "w1/test/dog/b.png", data: img}})
	if err := readSource(ctx, folder, dir); err != nil {
		t.Errorf("one wrapper folder: %v", err)
	}
}

// TestReliability14_SymlinksStayInside: a file link in a folder source
// used to be followed anywhere (an outside PNG was included, /etc/passwd
// read). A link leaving the source is refused, naming it, when the source is
// inspected and again when a unit is read (the folder may change in
// between); a link to a file inside the source still works.
func TestReliability14_SymlinksStayInside(t *testing.T) {
	ctx := context.Background()
	img := pngBytes(t, testImage(2, 2, gradient(0)))
	outside := writeFile(t, filepath.Join(t.TempDir(), "outside.png"), img)
	folder := Spec{Name: "folder", Format: FormatFolder}
	newSrc := func(t *testing.T) string {
		src := filepath.Join(t.TempDir(), "src")
		writeTree(t, src, []entry{{name: "train/cat/a.png", data: img}, {name: "train/dog/b.png", data: img}})
		return src
	}
	for _, target := range []string{outside, "/etc/passwd"} {
		t.Run("inspect "+target, func(t *testing.T) {
			src := newSrc(t)
			link := filepath.Join(src, "train", "dog", "x.png")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(link); err != nil {
				t.Skipf("link target not available: %v", err)
			}
			err := readSource(ctx, folder, src)
			mustContain(t, err, link, "outside the source folder")
		})
	}
	t.Run("read after inspect", func(t *testing.T) {
		src := newSrc(t)
		l, err := Inspect(ctx, folder, src, Options{})
		if err != nil {
			t.Fatal(err)
		}
		victim := filepath.Join(src, "train", "dog", "b.png")
		if err := os.Remove(victim); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, victim); err != nil {
			t.Fatal(err)
		}
		var errs []string
		for _, u := range l.Units {
			if err := ReadUnit(ctx, u, func(Item) error { return nil }); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if len(errs) != 1 || !strings.Contains(errs[0], victim) || !strings.Contains(errs[0], "outside the source folder") {
			t.Errorf("errors %q, want one naming %s", errs, victim)
		}
	})
	t.Run("link inside", func(t *testing.T) {
		src := newSrc(t)
		if err := os.Symlink(filepath.Join("..", "cat", "a.png"), filepath.Join(src, "train", "dog", "c.png")); err != nil {
			t.Fatal(err)
		}
		if err := readSource(ctx, folder, src); err != nil {
			t.Errorf("a link inside the source: %v", err)
		}
	})
}

// assertNoFileOver fails if any of paths exists with more than limit bytes.
func assertNoFileOver(t *testing.T, limit int64, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if n := fileSize(p); n > limit {
			t.Errorf("%s holds %d bytes, more than the %d allowed", p, n, limit)
		}
	}
}

// TestReliability17_EndlessBody: a body that never ends used to grow .part
// without limit (3.7 GB in 8 s) even with a known size or sha256. The
// download stops at the known size, or at FetchOptions.MaxBytes when the
// size is unknown, with an error naming the URL; nothing larger is kept.
func TestReliability17_EndlessBody(t *testing.T) {
	chunk := payload(64<<10, 3)
	var sent atomic.Int64
	srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		// Chunked (no Content-Length); bounded at 256 MiB so that a test
		// without the fix ends too.
		for range 4096 {
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil || r.Context().Err() != nil {
				return
			}
		}
	})
	known := fileFor("f.bin", chunk[:50_000])
	cases := []struct {
		name  string
		file  File
		max   int64
		limit int64
		want  string
	}{
		{"known size", known, 0, known.Size, "more than the 50000 bytes expected"},
		{"sha256 only", File{Name: "f.bin", SHA256: known.SHA256}, 1 << 20, 1 << 20, "goes on past 1048576 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "f.bin")
			opt := FetchOptions{Retries: 2, Backoff: time.Millisecond, Stall: 5 * time.Second, MaxBytes: c.max}
			sent.Store(0)
			err := Fetch(context.Background(), srv.URL+"/f.bin", c.file, dst, opt)
			srv.CloseClientConnections()
			// The client stops reading at the limit: the server gets rid of
			// little more than that and the sockets' buffers.
			if n := sent.Load(); n > 64<<20 {
				t.Errorf("the server sent %d bytes: the client read on past the %d allowed", n, c.limit)
			}
			mustContain(t, err, srv.URL+"/f.bin", c.want)
			assertNoFileOver(t, c.limit, dst, dst+".part", dst+".bad")
			if _, err := os.Stat(dst); err == nil {
				t.Errorf("%s exists after a failed download", dst)
			}
		})
	}
}

// TestReliability18_ShortBodyIgnoringRange: a server that sends less than
// its Content-Length, keeps the connection open and ignores Range requests
// used to stall 2 minutes per try, six tries. Fetch now gives up once two
// attempts in a row get no further, saying so; and FetchOptions.Timeout
// bounds the whole download of a URL whatever the server does.
func TestReliability18_ShortBodyIgnoringRange(t *testing.T) {
	data := payload(200_000, 4)
	f := fileFor("f.bin", data)
	t.Run("no progress", func(t *testing.T) {
		srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // until the client gives up
		})
		dst := filepath.Join(t.TempDir(), "f.bin")
		opt := FetchOptions{Retries: 5, Backoff: time.Millisecond, Stall: 100 * time.Millisecond, Timeout: time.Minute}
		err := Fetch(context.Background(), srv.URL+"/f.bin", f, dst, opt)
		mustContain(t, err, srv.URL+"/f.bin", "without getting further", "ignores Range")
		if n := len(srv.requests()); n != maxNoProgress+1 {
			t.Errorf("%d requests, want %d", n, maxNoProgress+1)
		}
	})
	t.Run("time limit", func(t *testing.T) {
		srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			for i := range 1000 { // one byte every 5 ms: never stalls, never ends in time
				if _, err := w.Write(data[i : i+1]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
		dst := filepath.Join(t.TempDir(), "f.bin")
		opt := FetchOptions{Retries: 5, Backoff: time.Millisecond, Stall: 10 * time.Second, Timeout: 300 * time.Millisecond}
		start := time.Now()
		err := Fetch(context.Background(), srv.URL+"/f.bin", f, dst, opt)
		mustContain(t, err, srv.URL+"/f.bin", "gave up after 300ms", "FetchOptions.Timeout", dst+".part")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
	})
}

// zerosZip is a zip whose members each inflate to size zero bytes, stored
// once compressed (4 × 200 MiB make an 842 KB file).
func zerosZip(t *testing.T, size int, names ...string) []byte {
	t.Helper()
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	zeros := make([]byte, 1<<20)
	crc := uint32(0)
	for left := size; left > 0; left -= len(zeros) {
		n := min(left, len(zeros))
		fw.Write(zeros[:n])
		crc = crc32.Update(crc, crc32.IEEETable, zeros[:n])
	}
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range names {
		w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Deflate, CRC32: crc,
			CompressedSize64: uint64(comp.Len()), UncompressedSize64: uint64(size)})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(comp.Bytes())
	}
	zw.Close()
	return buf.Bytes()
}

// TestReliability5_InflationBounded: a zip of 4 × 200 MiB zero members
// (842 KB) once took 10 GB: each member passed the 256 MiB cap, the total
// did not. A member inflating over maxInflation× is refused before it is
// inflated; so is an archive whose members inflate, together, past
// inflateFloor + maxInflation× its size, and a gzip stream doing the same;
// and the encoded images all readers hold at once are bounded by
// heldBudget. Each refusal names the archive and member and allocates
// little.
func TestReliability5_InflationBounded(t *testing.T) {
	ctx := context.Background()
	folder := Spec{Name: "folder", Format: FormatFolder}
	dir := t.TempDir()
	bomb := writeFile(t, filepath.Join(dir, "bomb.zip"), zerosZip(t, 200<<20, "train/c0/x.png", "train/c1/x.png", "train/c2/x.png", "train/c3/x.png"))
	var many []string
	for i := range 100 {
		many = append(many, fmt.Sprintf("train/c/%03d.png", i))
	}
	total := writeFile(t, filepath.Join(dir, "many.zip"), zerosZip(t, gateMin, many...))
	var tgz bytes.Buffer
	zw := gzip.NewWriter(&tgz)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "train/c/x.png", Mode: 0o644, Size: 200 << 20, Typeflag: tar.TypeReg})
	zeros := make([]byte, 1<<20)
	for range 200 {
		tw.Write(zeros)
	}
	tw.Close()
	zw.Close()
	gz := writeFile(t, filepath.Join(dir, "bomb.tar.gz"), tgz.Bytes())
	for _, c := range []struct {
		name, src string
		want      []string
		maxAlloc  uint64
	}{
		{"zip member", bomb, []string{"member train/c0/x.png", "inflates from", "to 209715200 bytes"}, 64 << 20},
		{"zip total", total, []string{"at member train/c/", "inflate to", "more than 67108864 plus 100 times"}, 128 << 20},
		{"gzip stream", gz, []string{"gzip bomb", "train/c/x.png"}, 64 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if a := testutil.Allocated(func() { err = readSource(ctx, folder, c.src) }); a > c.maxAlloc {
				t.Errorf("allocated %d MB, want < %d", a>>20, c.maxAlloc>>20)
			}
			mustContain(t, err, append(c.want, c.src)...)
		})
	}

	t.Run("held budget", func(t *testing.T) {
		defer func(b *semaphore.Weighted) { heldBudget = b }(heldBudget)
		heldBudget = semaphore.NewWeighted(4 << 20)
		src := filepath.Join(t.TempDir(), "src")
		var es []entry
		for i := range 6 {
			es = append(es, entry{name: fmt.Sprintf("train/c%d/x.png", i), data: payload(3<<20, uint64(i))})
		}
		writeTree(t, src, es)
		l, err := Inspect(ctx, folder, src, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var inFlight, most atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, len(l.Units))
		for _, u := range l.Units {
			wg.Go(func() {
				errs <- ReadUnit(ctx, u, func(it Item) error {
					n := inFlight.Add(int64(len(it.Encoded)))
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					<-time.After(20 * time.Millisecond) // a slow decode: others would pile up
					inFlight.Add(-int64(len(it.Encoded)))
					return nil
				})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if m := most.Load(); m > 4<<20 {
			t.Errorf("%d MiB of images held at once, more than the 4 MiB budget", m>>20)
		}
	})
}
