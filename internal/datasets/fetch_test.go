package datasets

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func payload(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func fileFor(name string, b []byte) File {
	s := sha256.Sum256(b)
	m := md5.Sum(b)
	return File{Name: name, SHA256: hex.EncodeToString(s[:]), MD5: hex.EncodeToString(m[:]), Size: int64(len(b))}
}

// dropAfter hijacks the connection, sends a 200 response announcing all of
// data but only its first n bytes, and closes the connection.
func dropAfter(t *testing.T, w http.ResponseWriter, data []byte, n int) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", len(data))
	buf.Write(data[:n])
	buf.Flush()
}

// server records the requests it sees.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	ranges []string
}

func (s *server) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func newServer(t *testing.T, h func(n int, w http.ResponseWriter, r *http.Request)) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.ranges)
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.mu.Unlock()
		h(n, w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func serve(w http.ResponseWriter, r *http.Request, data []byte) {
	http.ServeContent(w, r, "f.bin", time.Time{}, bytes.NewReader(data))
}

func fastOpts() FetchOptions {
	return FetchOptions{Retries: 4, Backoff: time.Millisecond}
}

// handlerFn answers the n-th request (0-based) of a test server.
type handlerFn = func(n int, w http.ResponseWriter, r *http.Request)

// fetchFault is one case of TestReliabilityHeld_FetchHTTPFaults.
type fetchFault struct {
	name      string
	handler   func(t *testing.T) handlerFn
	file      File
	opt       FetchOptions
	want      []byte   // final content, nil if Fetch must fail
	ranges    []string // Range headers the server must see, in order
	errParts  []string
	checksum  bool // error wraps ErrChecksum
	keepsPart bool
}

// failFirst answers the first k requests with fail, then serves data.
func failFirst(k int, data []byte, fail func(t *testing.T, w http.ResponseWriter, r *http.Request)) func(*testing.T) handlerFn {
	return func(t *testing.T) handlerFn {
		return func(n int, w http.ResponseWriter, r *http.Request) {
			if n < k {
				fail(t, w, r)
				return
			}
			serve(w, r, data)
		}
	}
}

// httpStatus fails a request with code.
func httpStatus(code int) func(*testing.T, http.ResponseWriter, *http.Request) {
	return func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		http.Error(w, http.StatusText(code), code)
	}
}

// fetchRecoveries are faults Fetch gets past.
func fetchRecoveries(data []byte, f File) []fetchFault {
	half := len(data) / 2
	drop := func(src []byte) func(*testing.T, http.ResponseWriter, *http.Request) {
		return func(t *testing.T, w http.ResponseWriter, _ *http.Request) { dropAfter(t, w, src, half) }
	}
	resume := []string{"", fmt.Sprintf("bytes=%d-", half)}
	stall := func(_ *testing.T, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:half])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // stall until the client gives up
	}
	ignoresRange := func(t *testing.T) handlerFn {
		return func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 0 {
				dropAfter(t, w, data, half)
				return
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data) // 200, whole file
		}
	}
	return []fetchFault{
		{name: "drop halfway then resume", handler: failFirst(1, data, drop(data)), file: f, opt: fastOpts(), want: data, ranges: resume},
		{name: "stalled body then resume", handler: failFirst(1, data, stall), file: f,
			opt: FetchOptions{Retries: 2, Backoff: time.Millisecond, Stall: 200 * time.Millisecond}, want: data, ranges: resume},
		{name: "500 then 200", handler: failFirst(2, data, httpStatus(http.StatusInternalServerError)), file: f, opt: fastOpts(), want: data, ranges: []string{"", "", ""}},
		{name: "429 with Retry-After 0", handler: failFirst(1, data, httpStatus(http.StatusTooManyRequests)), file: f, opt: fastOpts(), want: data, ranges: []string{"", ""}},
		{name: "server ignores Range", handler: ignoresRange, file: f, opt: fastOpts(), want: data, ranges: resume},
		{name: "resumed parts of two versions", handler: failFirst(1, data, drop(payload(len(data), 2))), file: f, opt: fastOpts(), want: data,
			ranges: append(resume, "")},
		{name: "unknown checksum and size", handler: failFirst(0, data, nil), file: File{Name: "f.bin"}, opt: fastOpts(), want: data, ranges: []string{""}},
	}
}

// fetchFailures are faults Fetch must report.
func fetchFailures(data []byte, f File) []fetchFault {
	dropsEveryTime := func(t *testing.T) handlerFn {
		return func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 0 {
				dropAfter(t, w, data, 1000)
				return
			}
			http.Error(w, "down", http.StatusBadGateway)
		}
	}
	return []fetchFault{
		{name: "wrong checksum", handler: failFirst(0, data, nil), file: File{Name: "f.bin", SHA256: strings.Repeat("ab", 32)}, opt: fastOpts(),
			ranges:   []string{""},
			errParts: []string{"f.bin", "sha256 is " + f.SHA256, "expected " + strings.Repeat("ab", 32), ".bad", "delete it"},
			checksum: true},
		{name: "wrong md5", handler: failFirst(0, data, nil), file: File{Name: "f.bin", MD5: strings.Repeat("0", 32), Size: int64(len(data))}, opt: fastOpts(),
			ranges:   []string{""},
			errParts: []string{"md5 is " + f.MD5, "expected " + strings.Repeat("0", 32)},
			checksum: true},
		{name: "404 is not retried", handler: failFirst(1<<30, nil, httpStatus(http.StatusNotFound)), file: f, opt: fastOpts(), ranges: []string{""},
			errParts: []string{"404"}},
		{name: "retries exhausted", handler: failFirst(1<<30, nil, httpStatus(http.StatusServiceUnavailable)), file: f,
			opt: FetchOptions{Retries: 2, Backoff: time.Millisecond}, ranges: []string{"", "", ""},
			errParts: []string{"giving up after 3 attempts", "503"}},
		{name: "drops every time: part kept", handler: dropsEveryTime, file: f,
			opt: FetchOptions{Retries: 1, Backoff: time.Millisecond}, ranges: []string{"", "bytes=1000-"},
			errParts: []string{"giving up after 2 attempts", ".part"}, keepsPart: true},
	}
}

func TestReliabilityHeld_FetchHTTPFaults(t *testing.T) {
	data := payload(300_000, 1)
	f := fileFor("f.bin", data)
	for _, c := range append(fetchRecoveries(data, f), fetchFailures(data, f)...) {
		t.Run(c.name, func(t *testing.T) { runFetchFault(t, c, data) })
	}
}

// runFetchFault fetches through c's server and checks the outcome.
func runFetchFault(t *testing.T, c fetchFault, data []byte) {
	srv := newServer(t, c.handler(t))
	dst := filepath.Join(t.TempDir(), "sub", "f.bin")
	var progress bytes.Buffer
	opt := c.opt
	opt.Progress = &progress
	err := Fetch(context.Background(), srv.URL+"/f.bin", c.file, dst, opt)
	if got := srv.requests(); strings.Join(got, "|") != strings.Join(c.ranges, "|") {
		t.Errorf("Range headers %q, want %q", got, c.ranges)
	}
	if c.want != nil {
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, c.want) {
			t.Fatalf("content differs (%d bytes, want %d)", len(got), len(c.want))
		}
		if _, err := os.Stat(dst + ".part"); !os.IsNotExist(err) {
			t.Errorf(".part left behind")
		}
		if progress.Len() == 0 {
			t.Errorf("no progress bar drawn")
		}
		return
	}
	mustContain(t, err, c.errParts...)
	if first, _, _ := strings.Cut(err.Error(), "\n"); !strings.Contains(first, "f.bin") {
		t.Errorf("first line %q does not name the file", first)
	}
	if _, serr := os.Stat(dst); !os.IsNotExist(serr) {
		t.Errorf("%s exists after a failed fetch", dst)
	}
	if c.checksum {
		if !errors.Is(err, ErrChecksum) {
			t.Errorf("%v does not wrap ErrChecksum", err)
		}
		bad, _ := os.ReadFile(dst + ".bad")
		if !bytes.Equal(bad, data) {
			t.Errorf("%s.bad does not hold the download", dst)
		}
	}
	if _, serr := os.Stat(dst + ".part"); c.keepsPart != (serr == nil) {
		t.Errorf(".part kept = %v, want %v", serr == nil, c.keepsPart)
	}
}

func TestFetchExistingAndLocal(t *testing.T) {
	data := payload(50_000, 3)
	f := fileFor("f.bin", data)
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) { serve(w, r, data) })
	dir := t.TempDir()

	dst := writeFile(t, filepath.Join(dir, "have", "f.bin"), data)
	if err := Fetch(context.Background(), srv.URL, f, dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("%d requests for a file already there", n)
	}
	// A damaged existing file is downloaded again.
	writeFile(t, dst, data[:100])
	if err := Fetch(context.Background(), srv.URL, f, dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Error("damaged file not replaced")
	}

	src := writeFile(t, filepath.Join(dir, "src", "f.bin"), data)
	for name, u := range map[string]string{"file URL": "file://" + src, "plain path": src} {
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "f.bin")
			var progress bytes.Buffer
			if err := Fetch(context.Background(), u, f, dst, FetchOptions{Progress: &progress}); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
				t.Error("content differs")
			}
			if progress.Len() == 0 {
				t.Error("no progress")
			}
			bad := f
			bad.SHA256 = strings.Repeat("1", 64)
			dst2 := filepath.Join(t.TempDir(), "g.bin")
			err := Fetch(context.Background(), u, bad, dst2, FetchOptions{})
			mustContain(t, err, "sha256 is "+f.SHA256, dst2+".bad")
			if !errors.Is(err, ErrChecksum) || isFile(dst2) || !isFile(dst2+".bad") {
				t.Errorf("bad local copy: %v", err)
			}
		})
	}
	t.Run("missing local file", func(t *testing.T) {
		err := Fetch(context.Background(), filepath.Join(dir, "nope.bin"), f, filepath.Join(dir, "x"), FetchOptions{})
		mustContain(t, err, "nope.bin")
	})
	t.Run("unsupported scheme", func(t *testing.T) {
		err := Fetch(context.Background(), "ftp://example.com/f.bin", f, filepath.Join(dir, "x"), FetchOptions{})
		mustContain(t, err, `unsupported scheme "ftp"`)
	})
	t.Run("FetchFile falls back to a mirror", func(t *testing.T) {
		down := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
		g := f
		g.URL, g.Mirrors = down.URL+"/f.bin", []string{srv.URL + "/f.bin"}
		dst := filepath.Join(t.TempDir(), "f.bin")
		if err := FetchFile(context.Background(), g, dst, fastOpts()); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
			t.Error("content differs")
		}
	})
}

func TestFetchCancel(t *testing.T) {
	data := payload(100_000, 4)
	f := fileFor("f.bin", data)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:5000])
		w.(http.Flusher).Flush()
		select { // stall until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	})
	dst := filepath.Join(t.TempDir(), "f.bin")
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel once the first bytes have arrived.
	pr := &watchWriter{fn: cancel}
	start := time.Now()
	err := Fetch(ctx, srv.URL, f, dst, FetchOptions{Progress: pr, Retries: 3, Backoff: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancellation took %v", d)
	}
	if isFile(dst) {
		t.Error("dst exists")
	}
	if fi, err := os.Stat(dst + ".part"); err != nil || fi.Size() == 0 {
		t.Errorf("partial download not kept for resuming: %v", err)
	}

	// Cancelled while waiting to retry.
	down := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) { http.Error(w, "x", 500) })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	err = Fetch(ctx2, down.URL, f, filepath.Join(t.TempDir(), "g"), FetchOptions{Retries: 5, Backoff: time.Hour})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}

// watchWriter calls fn at the first progress output (the bar is drawn as
// bytes arrive).
type watchWriter struct {
	mu sync.Mutex
	n  int
	fn func()
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += len(p)
	if w.fn != nil && w.n > 0 {
		w.fn()
		w.fn = nil
	}
	return len(p), nil
}

func TestVerify(t *testing.T) {
	data := payload(1000, 5)
	f := fileFor("f.bin", data)
	p := writeFile(t, filepath.Join(t.TempDir(), "f.bin"), data)
	if err := Verify(p, f); err != nil {
		t.Fatal(err)
	}
	if err := Verify(p, File{}); err != nil {
		t.Fatal(err)
	}
	g := f
	g.Size = 999
	mustContain(t, Verify(p, g), "size is 1000 bytes, expected 999")
	g = f
	g.SHA256 = strings.ToUpper(g.SHA256)
	if err := Verify(p, g); err != nil {
		t.Errorf("upper-case hex: %v", err)
	}
	// A known repackaging verifies even though size and md5 differ.
	alt := fileFor("f.bin", data[:10])
	alt.SHA256 = ""
	alt.AltSHA256 = []string{f.SHA256}
	if err := Verify(p, alt); err != nil {
		t.Errorf("AltSHA256: %v", err)
	}
	mustContain(t, Verify(filepath.Join(t.TempDir(), "none"), f), "none")
}
