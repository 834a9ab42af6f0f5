package stages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/datasets"
)

// wrappedFolderArchive writes a tar.gz of <top>/<split>/<class>/<image>.png,
// the layout of CIFAR-10-images-jpeg.tar.gz.
func wrappedFolderArchive(t *testing.T, top string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, split := range []string{"train", "test"} {
		for ci, class := range []string{"cat", "dog"} {
			for i := range 3 {
				data := pngBytes(8, 8, uint8(ci*90+i))
				tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%s/%s/%s/%02d.png", top, split, class, i), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
				tw.Write(data)
			}
		}
	}
	tw.Close()
	zw.Close()
	p := filepath.Join(t.TempDir(), top+".tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDownloadSourceSniffed gives --source values of every kind to
// registered datasets: an image folder (tree or archive) is read as the
// folder format under the dataset's name; another dataset's files are
// refused with the dataset.name that fits.
func TestDownloadSourceSniffed(t *testing.T) {
	cifarArchive, _, _ := cifarBinaryArchive(t)
	cifarPath := filepath.Join(t.TempDir(), "cifar-10-binary.tar.gz")
	if err := os.WriteFile(cifarPath, cifarArchive, 0o644); err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	for _, split := range []string{"train", "test"} {
		for _, class := range []string{"a", "b"} {
			d := filepath.Join(tree, split, class)
			os.MkdirAll(d, 0o755)
			os.WriteFile(filepath.Join(d, "x.png"), pngBytes(8, 8, 9), 0o644)
		}
	}
	for _, tc := range []struct {
		name, dataset, source string
		records               int64  // train records when it works
		format                string // manifest format when it works
		err                   string // else, in the error
	}{
		{"jpeg-style archive for cifar10", "cifar10", wrappedFolderArchive(t, "CIFAR-10-images"), 6, datasets.FormatFolder, ""},
		{"plain folder archive for cifar10", "cifar10", folderArchive(t, 8, nil), 12, datasets.FormatFolder, ""},
		{"folder tree for cifar100", "cifar100", tree, 2, datasets.FormatFolder, ""},
		{"binary archive for its own dataset", "cifar10", cifarPath + ", sha256: " + sha(cifarArchive), 4000, datasets.FormatCIFAR10, ""},
		{"cifar10 archive for mnist", "mnist", cifarPath, 0, "", "set dataset.name: cifar10"},
		{"cifar10 archive for folder", "folder", cifarPath, 0, "", "set dataset.name: cifar10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: %s, source: %s}\n", t.TempDir(), tc.dataset, tc.source), Options{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Manifest.Records("train"); got != tc.records {
				t.Errorf("train records %d, want %d", got, tc.records)
			}
			if got := st.Manifest.Meta["format"]; got != tc.format {
				t.Errorf("format %v, want %s", got, tc.format)
			}
		})
	}
}

// TestOfflineHint: an unreachable server's error gains one --source hint;
// others pass through unchanged.
func TestOfflineHint(t *testing.T) {
	spec, _ := datasets.Lookup("cifar10")
	plain := errors.New("HTTP 404")
	if got := offlineHint(spec, plain); got != plain {
		t.Errorf("a 404 changed: %v", got)
	}
	if offlineHint(spec, nil) != nil {
		t.Error("no error became one")
	}
	off := fmt.Errorf("fetch x: %w: dial tcp: lookup x: no such host", datasets.ErrUnreachable)
	got := offlineHint(spec, off)
	if !errors.Is(got, datasets.ErrUnreachable) || strings.Count(got.Error(), "--source") != 1 || !strings.Contains(got.Error(), "offline?") {
		t.Errorf("offline error: %v", got)
	}
}
