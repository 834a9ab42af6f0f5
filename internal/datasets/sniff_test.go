package datasets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

func imageTree(top string) []entry {
	var es []entry
	for _, split := range []string{"train", "test"} {
		for _, class := range []string{"cat", "dog"} {
			es = append(es, entry{name: fmt.Sprintf("%s%s/%s/0.png", top, split, class), data: []byte("png")})
		}
	}
	return es
}

func TestSniff(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	writeTree(t, tree, imageTree(""))
	idxDir := filepath.Join(dir, "idx")
	writeTree(t, idxDir, []entry{{name: "train-images-idx3-ubyte.gz", data: []byte{1}}})
	cifar := []entry{{name: "cifar-10-batches-bin/batches.meta.txt", data: []byte("a\n")}, {name: "cifar-10-batches-bin/data_batch_1.bin", data: []byte{0}}}
	for _, tc := range []struct {
		name string
		path string
		want SourceKind
		fits []string
	}{
		{"image tree", tree, SourceKind{Folder: true}, []string{"folder"}},
		{"tar.gz with a top folder", writeFile(t, filepath.Join(dir, "jpeg.tar.gz"), tarBytes(t, true, imageTree("CIFAR-10-images/"))), SourceKind{Archive: true, Folder: true}, []string{"folder"}},
		{"zip", writeFile(t, filepath.Join(dir, "imgs.zip"), zipBytes(t, imageTree(""))), SourceKind{Archive: true, Folder: true}, []string{"folder"}},
		{"cifar10 binary", writeFile(t, filepath.Join(dir, "c.tar.gz"), tarBytes(t, true, cifar)), SourceKind{Archive: true, Format: FormatCIFAR10}, []string{"cifar10"}},
		{"cifar100 binary", writeFile(t, filepath.Join(dir, "c100.tar"), tarBytes(t, false, []entry{{name: "cifar-100-binary/train.bin", data: []byte{0}}})), SourceKind{Archive: true, Format: FormatCIFAR100}, []string{"cifar100"}},
		{"stl10 binary", writeFile(t, filepath.Join(dir, "s.tar.gz"), tarBytes(t, true, []entry{{name: "stl10_binary/train_X.bin", data: []byte{0}}})), SourceKind{Archive: true, Format: FormatSTL10}, []string{"stl10"}},
		{"idx folder", idxDir, SourceKind{Format: FormatIDX}, []string{"fashion-mnist", "mnist"}},
		{"not an archive", writeFile(t, filepath.Join(dir, "notes.txt"), []byte("hello")), SourceKind{Archive: true}, nil},
		{"flat images", writeFile(t, filepath.Join(dir, "flat.zip"), zipBytes(t, []entry{{name: "a.png", data: []byte("x")}})), SourceKind{Archive: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Sniff(context.Background(), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Sniff = %+v (%s), want %+v", got, got, tc.want)
			}
			if fits := got.DatasetNames(); !slices.Equal(fits, tc.fits) {
				t.Errorf("DatasetNames = %v, want %v", fits, tc.fits)
			}
		})
	}
	if _, err := Sniff(context.Background(), filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing source sniffed without error")
	}
}

// FuzzSniff: any bytes given as a source file are classified without a
// panic or an error.
func FuzzSniff(f *testing.F) {
	f.Add(tarBytes(f, true, imageTree("x/")))
	f.Add(zipBytes(f, imageTree("")))
	f.Add([]byte("PK\x03\x04garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "src")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Sniff(context.Background(), p); err != nil {
			t.Fatalf("Sniff of a %d-byte file: %v", len(data), err)
		}
	})
}

// TestFetchFileMirrors: the registry URL fails (404, or a refused
// connection), the mirror serves the file, and its checksum is checked.
func TestFetchFileMirrors(t *testing.T) {
	data := payload(50_000, 3)
	srv := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			serve(w, r, data)
		case "/other":
			serve(w, r, payload(50_000, 4))
		default:
			http.NotFound(w, r)
		}
	})
	closed := newServer(t, func(int, http.ResponseWriter, *http.Request) {})
	refused := closed.URL + "/ok"
	closed.Close()
	for _, tc := range []struct {
		name    string
		urls    []string
		wantErr error
	}{
		{"404 then mirror", []string{srv.URL + "/gone", srv.URL + "/ok"}, nil},
		{"refused then mirror", []string{refused, srv.URL + "/ok"}, nil},
		{"mirror with other bytes", []string{srv.URL + "/gone", srv.URL + "/other"}, ErrChecksum},
		{"all fail", []string{srv.URL + "/gone", refused}, ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fileFor("f.bin", data)
			f.URL, f.Mirrors = tc.urls[0], tc.urls[1:]
			dst := filepath.Join(t.TempDir(), "f.bin")
			err := FetchFile(context.Background(), f, dst, fastOpts())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if Verify(dst, f) != nil {
				t.Fatal("fetched file does not verify")
			}
		})
	}
}

// TestFetchUnreachable: a DNS failure or refused connection is tried once,
// says "offline?", and claims no partial download.
func TestFetchUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"dns", &net.DNSError{Err: "no such host", Name: "example.invalid", IsNotFound: true}},
		{"dns temporary", &net.DNSError{Err: "temporary failure in name resolution", Name: "example.invalid", IsTemporary: true}},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dials atomic.Int32
			opt := fastOpts()
			opt.Client = &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
				dials.Add(1)
				return nil, tc.err
			}}}
			dst := filepath.Join(t.TempDir(), "f.bin")
			err := Fetch(context.Background(), "http://example.invalid/f.bin", File{Name: "f.bin"}, dst, opt)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "offline?") {
				t.Fatalf("err = %v, want ErrUnreachable saying offline?", err)
			}
			if strings.Contains(err.Error(), ".part") {
				t.Errorf("the error mentions a partial download that does not exist: %v", err)
			}
			if n := dials.Load(); n != 1 {
				t.Errorf("%d connection attempts, want 1 (no retries)", n)
			}
		})
	}
}
