package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
)

// roots runs a test on a local folder and on a fake GCS bucket.
func roots(t *testing.T) map[string]string {
	testutil.FakeGCS(t, "bkt")
	return map[string]string{"local": t.TempDir(), "gcs": "gs://bkt/prefix"}
}

func TestWriteReadListRemove(t *testing.T) {
	ctx := context.Background()
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) {
			a := storage.Join(root, "stage", "key", "a.bin")
			b := storage.Join(root, "stage", "key", "sub", "b.bin")
			if ok, err := storage.Exists(ctx, a); err != nil || ok {
				t.Fatalf("Exists before write = %v, %v", ok, err)
			}
			if _, err := storage.ReadFile(ctx, a); !errors.Is(err, storage.ErrNotExist) {
				t.Fatalf("ReadFile of missing file: %v, want ErrNotExist", err)
			}
			for _, p := range []string{a, b} {
				if err := storage.WriteFile(ctx, p, []byte("hello "+p)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := storage.ReadFile(ctx, a)
			if err != nil || string(got) != "hello "+a {
				t.Fatalf("ReadFile = %q, %v", got, err)
			}
			if n, err := storage.Size(ctx, b); err != nil || n != int64(len("hello "+b)) {
				t.Fatalf("Size = %d, %v", n, err)
			}
			files, err := storage.List(ctx, storage.Join(root, "stage"))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(files) != fmt.Sprint([]string{a, b}) {
				t.Fatalf("List = %v, want %v", files, []string{a, b})
			}
			c := storage.Join(root, "stage", "key", "c.bin")
			if err := storage.Rename(ctx, a, c); err != nil {
				t.Fatal(err)
			}
			if ok, _ := storage.Exists(ctx, a); ok {
				t.Fatal("rename left the source")
			}
			if err := storage.RemoveAll(ctx, storage.Join(root, "stage")); err != nil {
				t.Fatal(err)
			}
			if files, _ := storage.List(ctx, storage.Join(root, "stage")); len(files) != 0 {
				t.Fatalf("after RemoveAll: %v", files)
			}
		})
	}
}

// TestAtomicWrite checks that nothing is visible until Close, and that an
// aborted write leaves nothing behind.
func TestAtomicWrite(t *testing.T) {
	ctx := context.Background()
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) {
			p := storage.Join(root, "x", "shard.msgpack")
			w, err := storage.Create(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(make([]byte, 3<<20)); err != nil {
				t.Fatal(err)
			}
			if ok, _ := storage.Exists(ctx, p); ok {
				t.Fatal("file visible before Close")
			}
			if files, _ := storage.List(ctx, storage.Join(root, "x")); len(files) != 0 {
				t.Fatalf("List shows unfinished write: %v", files)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if n, err := storage.Size(ctx, p); err != nil || n != 3<<20 {
				t.Fatalf("after Close: size %d, %v", n, err)
			}

			q := storage.Join(root, "x", "aborted.msgpack")
			w, err = storage.Create(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("partial"))
			w.Abort()
			if ok, _ := storage.Exists(ctx, q); ok {
				t.Fatal("aborted write is visible")
			}
			if name == "local" {
				entries, _ := os.ReadDir(filepath.Join(root, "x"))
				if len(entries) != 1 {
					t.Fatalf("aborted write left files: %v", entries)
				}
			}
		})
	}
}

func TestCopyAcross(t *testing.T) {
	ctx := context.Background()
	r := roots(t)
	src := storage.Join(r["local"], "in.txt")
	dst := storage.Join(r["gcs"], "out.txt")
	if err := storage.WriteFile(ctx, src, []byte("payload")); err != nil {
		t.Fatal(err)
	}
	if err := storage.Copy(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	rc, err := storage.Open(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if string(got) != "payload" {
		t.Fatalf("copied %q", got)
	}
}

func TestRetry(t *testing.T) {
	ctx := context.Background()
	p := storage.RetryPolicy{Attempts: 4, Initial: 1, Max: 1}
	tests := []struct {
		name      string
		errs      []error
		wantCalls int
		wantErr   bool
	}{
		{"succeeds first", []error{nil}, 1, false},
		{"transient then ok", []error{io.ErrUnexpectedEOF, io.ErrUnexpectedEOF, nil}, 3, false},
		{"permanent", []error{os.ErrPermission}, 1, true},
		{"gives up", []error{io.ErrUnexpectedEOF, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF, nil}, 4, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := storage.Retry(ctx, p, func() error { calls++; return tc.errs[calls-1] })
			if calls != tc.wantCalls || (err != nil) != tc.wantErr {
				t.Fatalf("calls %d err %v; want %d calls, error %v", calls, err, tc.wantCalls, tc.wantErr)
			}
		})
	}
}

func TestPublishedFileMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := storage.WriteFile(context.Background(), p, []byte("x")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v; want 0644", st.Mode().Perm(), err)
	}
}

func TestExpandBraces(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  bool
	}{
		{"a.tar", "[a.tar]", false},
		{"s-{000..002}.tar", "[s-000.tar s-001.tar s-002.tar]", false},
		{"{train,val}-{8..10}", "[train-8 train-9 train-10 val-8 val-9 val-10]", false},
		{"x{1..0}", "", true},
		{"x{1..", "", true},
		{"x}", "", true},
		{"x{0..99999999}", "", true},
	}
	for _, tc := range tests {
		got, err := storage.ExpandBraces(tc.in)
		if (err != nil) != tc.err || (!tc.err && fmt.Sprint(got) != tc.want) {
			t.Errorf("storage.ExpandBraces(%q) = %v, %v; want %s (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestGlobAndRanges(t *testing.T) {
	ctx := context.Background()
	testutil.FakeGCS(t, "bkt")
	local := t.TempDir()
	for _, base := range []string{local, "gs://bkt/wds"} {
		for _, n := range []string{"train-000.tar", "train-001.tar", "train-002.tar", "val-000.tar", "notes.txt"} {
			if err := storage.WriteFile(ctx, storage.Join(base, n), []byte("0123456789"+n)); err != nil {
				t.Fatal(err)
			}
		}
		for pat, want := range map[string]int{"train-*.tar": 3, "train-{000..001}.tar": 2, "{train,val}-000.tar": 2, "*.tar": 4} {
			got, err := storage.Glob(ctx, storage.Join(base, pat))
			if err != nil || len(got) != want {
				t.Errorf("Glob(%s) = %v, %v; want %d files", storage.Join(base, pat), got, err, want)
			}
		}
		if _, err := storage.Glob(ctx, storage.Join(base, "train-{005..006}.tar")); err == nil {
			t.Errorf("%s: a literal name that does not exist is not an error", base)
		}
		rc, err := storage.OpenRange(ctx, storage.Join(base, "train-001.tar"), 3, 4)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "3456" {
			t.Errorf("%s: range read %q, want 3456", base, b)
		}
		ra, err := storage.OpenReaderAt(ctx, storage.Join(base, "train-002.tar"))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if n, err := ra.ReadAt(buf, 18); n != 5 || err != nil || string(buf) != "2.tar" {
			t.Errorf("%s: ReadAt = %d %q %v", base, n, buf, err)
		}
		if n, err := ra.ReadAt(buf, 21); n != 2 || err != io.EOF {
			t.Errorf("%s: ReadAt past the end = %d, %v; want 2, EOF", base, n, err)
		}
		ra.Close()
	}
	if storage.GCSBytesRead("bkt") == 0 {
		t.Error("reads from gs://bkt were not counted")
	}
}

// TestWriteLargerThanGCSBuffer: an object of several GCSWriteBuffer chunks
// (a resumable upload on gs://) arrives whole.
func TestWriteLargerThanGCSBuffer(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 2*storage.GCSWriteBuffer+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) {
			p := storage.Join(root, "big.bin")
			w, err := storage.Create(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < len(data); off += 1 << 20 {
				if _, err := w.Write(data[off:min(off+1<<20, len(data))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := storage.ReadFile(ctx, p)
			if err != nil || string(got) != string(data) {
				t.Fatalf("read back %d bytes (%v), wrote %d", len(got), err, len(data))
			}
		})
	}
}
