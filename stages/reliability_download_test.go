package stages

// The download cases of the reliability suite (docs/reliability.md).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/igpt/igpt/internal/datasets"
)

// TestReliability12_FolderSHA256: dataset.sha256 with a folder source used
// to be ignored. It is checked against the folder's digest (TreeSHA256,
// documented, and reproduced by TreeDigestCommand with coreutils); a wrong
// one fails the stage naming the folder and the command.
func TestReliability12_FolderSHA256(t *testing.T) {
	src := filepath.Join(t.TempDir(), "imgs")
	files := map[string][]byte{}
	for i, name := range []string{"train/cat/a.png", "train/dog/b.png", "test/cat/c.png", "test/dog/d.png", ".hidden", "train/notes.txt"} {
		files[name] = pngBytes(4, 4, uint8(i))
	}
	var lines []string
	for name, data := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, sha(data)+"  "+name+"\n")
	}
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	h := sha256.Sum256([]byte(strings.Join(lines, "")))
	want := hex.EncodeToString(h[:])
	if got, err := datasets.TreeSHA256(context.Background(), src); err != nil || got != want {
		t.Fatalf("TreeSHA256 = %s, %v; want %s", got, err, want)
	}
	if _, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command("sh", "-c", datasets.TreeDigestCommand)
		cmd.Dir = src
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", datasets.TreeDigestCommand, err)
		}
		if got, _, _ := strings.Cut(string(out), " "); got != want {
			t.Errorf("the documented command gives %s, TreeSHA256 %s", got, want)
		}
	}
	for _, c := range []struct {
		name, sum string
		ok        bool
	}{{"right", want, true}, {"wrong", strings.Repeat("0", 64), false}} {
		t.Run(c.name, func(t *testing.T) {
			st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s, sha256: %s}\ndownload: {shard_mib: 1}\n", t.TempDir(), src, c.sum), Options{})
			if c.ok {
				if err != nil || !st.Done() {
					t.Fatalf("right digest: %v", err)
				}
				return
			}
			if err == nil || st.Done() {
				t.Fatalf("a wrong digest: err %v, done %v", err, st.Done())
			}
			for _, part := range []string{"dataset.sha256", src, "its digest is " + want, "sha256sum"} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not name %q", err, part)
				}
			}
		})
	}
}

// TestReliability16_SourceFileNames: a URL ending in "/.." once wrote the
// tarball as the file <root>/_cache. A source whose last element is not a
// file name is refused, naming it, before anything is fetched.
func TestReliability16_SourceFileNames(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(folderTarGz(t))
	}))
	t.Cleanup(srv.Close)
	for _, src := range []string{srv.URL + "/a/..", srv.URL + "/a/%2e%2e", srv.URL + "/a/.", srv.URL + "/", srv.URL + "/x/..?y=1", "gs://bucket/x/.."} {
		t.Run(src, func(t *testing.T) {
			root := t.TempDir()
			for _, sum := range []string{"", ", sha256: " + strings.Repeat("0", 64)} {
				st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: folder, source: '%s'%s}\n", root, src, sum), Options{})
				if err == nil || st.Done() || !strings.Contains(err.Error(), "does not end in a file name") || !strings.Contains(err.Error(), src) {
					t.Errorf("sha256 %q: %v, want an error naming %s", sum, err, src)
				}
				if fi, err := os.Stat(filepath.Join(root, "_cache")); err == nil && !fi.IsDir() {
					t.Errorf("%s/_cache is a file", root)
				}
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the server was asked %d times", n)
	}
}

// folderTarGz is a small image-folder archive.
func folderTarGz(t *testing.T) []byte {
	b, err := os.ReadFile(folderArchive(t, 4, nil))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReliability19_ShardCountBounded: download.shards (20000 once wrote 12k
// files for minutes) is gone; shard_mib is validated to 1..4096 and each
// source unit starts a new shard only after shard_mib MiB of pixels, so the
// files written are at most units + pixel MiB / shard_mib, whatever the
// setting.
func TestReliability19_ShardCountBounded(t *testing.T) {
	assertConfigError(t, "download: {shards: {train: 20000}}", "download.shards is no longer used")
	for _, v := range []string{"-1", "4097", "100000"} {
		assertConfigError(t, "download: {shard_mib: "+v+"}", "download.shard_mib is "+v+": want 0..4096")
	}
	// 2 splits × 3 classes (6 units) × 4 images of 400×400×3: 1.8 MiB of
	// pixels a unit, 11 MiB in all.
	src := folderArchive(t, 400, nil)
	st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\n", t.TempDir(), src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	units, pixels := 6, int64(2*3*4*400*400*3)
	if n := len(st.Manifest.Files); n <= units || n > units+int(pixels>>20) {
		t.Errorf("%d shard files for %d units and %d MiB of pixels at shard_mib 1: want more than %d (split by size) and at most %d", n, units, pixels>>20, units, units+int(pixels>>20))
	}
}
