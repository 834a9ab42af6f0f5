package stages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
)

// runDownload runs the download stage of a YAML config and returns its
// plan step.
func runDownload(t *testing.T, yaml string, opt Options) (*Step, error) {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Path = "test.yaml"
	ctx := context.Background()
	p, err := NewPlan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := p.Step("download")
	err = p.RunOne(ctx, "download", opt)
	if st.Manifest != nil {
		// Check what was written, not what is in memory.
		var rerr error
		if st.Manifest, rerr = ReadManifest(ctx, st.Dir); rerr != nil {
			t.Fatal(rerr)
		}
	}
	return st, err
}

// readImages reads every Image record of a manifest's split, checking that
// it is found in exactly one shard.
func readImages(t *testing.T, m *Manifest, split string) map[string]records.Image {
	t.Helper()
	ctx := context.Background()
	out := map[string]records.Image{}
	for _, f := range m.Split(split) {
		rc, err := storage.Open(ctx, m.Path(f.Name))
		if err != nil {
			t.Fatal(err)
		}
		r, err := records.NewReader(rc, f.Name)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			var img records.Image
			err := r.Next(&img)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, dup := out[img.Key]; dup {
				t.Fatalf("key %s appears twice", img.Key)
			}
			out[img.Key] = img
			n++
		}
		rc.Close()
		if int64(n) != f.Records {
			t.Fatalf("%s: manifest says %d records, shard holds %d", f.Name, f.Records, n)
		}
	}
	return out
}

func classCounts(t *testing.T, m *Manifest, split string) map[string]int64 {
	t.Helper()
	all, ok := m.Meta["class_counts"].(map[string]any)
	if !ok {
		t.Fatalf("manifest meta has no class_counts: %v", m.Meta)
	}
	out := map[string]int64{}
	for k, v := range all[split].(map[string]any) {
		out[k] = int64(v.(float64))
	}
	return out
}

// idxLabels reads an idx1 label file (gzip) independently of the datasets
// package: the expected per-class counts.
func idxLabels(t *testing.T, path string) map[string]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, l := range b[8:] {
		out[strconv.Itoa(int(l))]++
	}
	return out
}

func TestDownloadIDX(t *testing.T) {
	tests := []struct {
		name, dir string
		classes   []string
	}{
		{"mnist", "mnist", []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
		{"fashion-mnist", "fashion-mnist", []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := testutil.SharedData(t, tc.dir)
			st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: %s, source: %s}\ndownload: {shard_mib: 16}\n", t.TempDir(), tc.name, src), Options{})
			if err != nil {
				t.Fatal(err)
			}
			m := st.Manifest
			for split, file := range map[string]string{"train": "train-labels-idx1-ubyte.gz", "test": "t10k-labels-idx1-ubyte.gz"} {
				want := idxLabels(t, filepath.Join(src, file))
				got := classCounts(t, m, split)
				var total int64
				for label, n := range want {
					i, _ := strconv.Atoi(label)
					if got[tc.classes[i]] != n {
						t.Errorf("%s class %s: %d records, source has %d", split, tc.classes[i], got[tc.classes[i]], n)
					}
					total += n
				}
				if m.Records(split) != total {
					t.Errorf("%s: %d records, source has %d", split, m.Records(split), total)
				}
			}
			if len(m.Split("train")) != 3 || len(m.Split("test")) != 1 {
				t.Errorf("shards: %+v", m.Files)
			}
		})
	}
}

func TestDownloadCIFAR10JPEGTree(t *testing.T) {
	src := testutil.SharedData(t, "cifar10-jpeg", "CIFAR-10-images-jpeg.tar.gz")
	start := time.Now()
	st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s, image_size: [32, 32]}\n", t.TempDir(), src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := st.Manifest
	t.Logf("CIFAR-10 JPEG tree: %d records in %v (prism)", m.Records(""), time.Since(start))
	want := map[string]int64{"train": 5000, "test": 1000}
	classes := []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
	if fmt.Sprint(m.Meta["classes"]) != fmt.Sprint(classes) {
		t.Errorf("classes %v, want %v", m.Meta["classes"], classes)
	}
	for split, per := range want {
		if m.Records(split) != 10*per {
			t.Errorf("%s: %d records, want %d", split, m.Records(split), 10*per)
		}
		for c, n := range classCounts(t, m, split) {
			if n != per {
				t.Errorf("%s/%s: %d records, want %d", split, c, n, per)
			}
		}
	}
}

// cifarBinaryArchive builds an official-layout cifar-10-binary.tar.gz of
// generated records (4000 train, 1000 test; no ../shared needed) and
// returns its bytes and the two batches.
func cifarBinaryArchive(t *testing.T) (archive []byte, train, test []byte) {
	t.Helper()
	records := func(n int, seed uint64) []byte {
		rng := rand.New(rand.NewPCG(seed, 10))
		b := make([]byte, n*3073)
		for i := range n {
			b[i*3073] = byte(i % 10) // label, every class present
			for j := 1; j < 3073; j++ {
				b[i*3073+j] = byte(rng.Uint32())
			}
		}
		return b
	}
	train, test = records(4000, 1), records(1000, 2)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	tw.WriteHeader(&tar.Header{Name: "cifar-10-batches-bin/", Mode: 0o755, Typeflag: tar.TypeDir})
	add("cifar-10-batches-bin/batches.meta.txt", []byte("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"))
	add("cifar-10-batches-bin/data_batch_1.bin", train)
	add("cifar-10-batches-bin/test_batch.bin", test)
	tw.Close()
	zw.Close()
	return buf.Bytes(), train, test
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// serveFile serves one file with Range support; fail(n) may break the n-th
// request (1-based) by returning true after writing an error.
func serveFile(t *testing.T, data []byte, fail func(n int, w http.ResponseWriter, r *http.Request) bool) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := int(n.Add(1))
		if fail != nil && fail(k, w, r) {
			return
		}
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestDownloadCIFAR10BinaryOverHTTP(t *testing.T) {
	archive, train, test := cifarBinaryArchive(t)
	srv, _ := serveFile(t, archive, nil)
	st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: cifar10, source: %s/cifar-10-binary.tar.gz, sha256: %s}\ndownload: {shard_mib: 1}\n",
		t.TempDir(), srv.URL, sha(archive)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := st.Manifest
	for split, src := range map[string][]byte{"train": train, "test": test} {
		imgs := readImages(t, m, split)
		n := len(src) / 3073
		if len(imgs) != n {
			t.Fatalf("%s: %d images, want %d", split, len(imgs), n)
		}
		perClass := map[int]int64{}
		for key, img := range imgs {
			i, err := strconv.Atoi(key[strings.LastIndexByte(key, '/')+1:])
			if err != nil || i >= n {
				t.Fatalf("unexpected key %q", key)
			}
			rec := src[i*3073 : (i+1)*3073]
			if img.Label != int(rec[0]) || img.H != 32 || img.W != 32 || img.C != 3 {
				t.Fatalf("%s: label %d shape %dx%dx%d, want label %d 32x32x3", key, img.Label, img.H, img.W, img.C, rec[0])
			}
			for p := 0; p < 1024; p++ {
				for c := 0; c < 3; c++ {
					if img.Pix[p*3+c] != rec[1+c*1024+p] {
						t.Fatalf("%s: pixel %d channel %d = %d, source %d", key, p, c, img.Pix[p*3+c], rec[1+c*1024+p])
					}
				}
			}
			perClass[img.Label]++
		}
		got := classCounts(t, m, split)
		classes := m.Meta["classes"].([]any)
		for label, cnt := range perClass {
			if got[classes[label].(string)] != cnt {
				t.Errorf("%s class %v: manifest %d, records %d", split, classes[label], got[classes[label].(string)], cnt)
			}
		}
	}
}

// TestReliabilityHeld_HTTPResumeAndRetries serves the archive through a server that
// drops the first connection halfway and answers 500 to the second.
func TestReliabilityHeld_HTTPResumeAndRetries(t *testing.T) {
	archive, _, _ := cifarBinaryArchive(t)
	var sawRange atomic.Bool
	srv, n := serveFile(t, archive, func(k int, w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Range") != "" {
			sawRange.Store(true)
		}
		switch k {
		case 1: // half the body, then the connection drops
			w.Header().Set("Content-Length", strconv.Itoa(len(archive)))
			w.WriteHeader(200)
			w.Write(archive[:len(archive)/2])
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
			return true
		case 2:
			http.Error(w, "try later", 500)
			return true
		}
		return false
	})
	st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: cifar10, source: %s/cifar-10-binary.tar.gz, sha256: %s}\n", t.TempDir(), srv.URL, sha(archive)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Manifest.Records("train") != 4000 || n.Load() < 3 || !sawRange.Load() {
		t.Fatalf("records %d after %d requests (range seen: %v)", st.Manifest.Records("train"), n.Load(), sawRange.Load())
	}
}

func TestReliabilityHeld_HTTPBadChecksumKeptAside(t *testing.T) {
	archive, _, _ := cifarBinaryArchive(t)
	srv, _ := serveFile(t, archive, nil)
	root := t.TempDir()
	st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: cifar10, source: %s/cifar-10-binary.tar.gz, sha256: %s}\n", root, srv.URL, strings.Repeat("0", 64)), Options{})
	if first, _, _ := strings.Cut(fmt.Sprint(err), "\n"); err == nil || !strings.Contains(first, "cifar-10-binary.tar.gz") {
		t.Fatalf("wrong checksum: the first line does not name the file: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "_cache", "cifar10", "cifar-10-binary.tar.gz.bad")); err != nil {
		t.Errorf("the refused file was not kept aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "_cache", "cifar10", "cifar-10-binary.tar.gz")); !os.IsNotExist(err) {
		t.Errorf("the refused file was published: %v", err)
	}
	if files, _ := storage.List(context.Background(), st.Dir); len(files) != 0 {
		t.Errorf("stage folder has files after a refused download: %v", files)
	}
}

func TestReliabilityHeld_TruncatedArchive(t *testing.T) {
	archive, _, _ := cifarBinaryArchive(t)
	src := filepath.Join(t.TempDir(), "cifar-10-binary.tar.gz")
	os.WriteFile(src, archive[:len(archive)*2/3], 0o644)
	st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: cifar10, source: %s, sha256: %s}\n", t.TempDir(), src, sha(archive[:len(archive)*2/3])), Options{})
	if first, _, _ := strings.Cut(fmt.Sprint(err), "\n"); err == nil || !strings.Contains(first, "cifar-10-binary.tar.gz") || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated archive: the first line does not name the archive: err = %v", err)
	}
	if st.Done() {
		t.Fatal("manifest written for a truncated archive")
	}
}

// folderArchive writes a tar.gz image folder: splits × classes × n PNGs of
// size×size, plus extra entries.
func folderArchive(t *testing.T, size int, extra map[string][]byte, emptyDirs ...string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	for _, split := range []string{"train", "test"} {
		for ci, class := range []string{"cat", "dog", "emu"} {
			for i := 0; i < 4; i++ {
				add(fmt.Sprintf("%s/%s/%02d.png", split, class, i), pngBytes(size, size, uint8(ci*60+i)))
			}
		}
	}
	for name, data := range extra {
		add(name, data)
	}
	for _, d := range emptyDirs {
		tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir})
	}
	tw.Close()
	zw.Close()
	p := filepath.Join(t.TempDir(), "images.tar.gz")
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

func pngBytes(w, h int, v uint8) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{v, uint8(x * 16), uint8(y * 16), 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

func TestDownloadFolderPolicies(t *testing.T) {
	odd := map[string][]byte{"train/dog/odd.png": pngBytes(9, 8, 7)}
	tests := []struct {
		name      string
		src       string
		policy    string
		wantErr   string
		wantTrain int64
	}{
		{"clean", folderArchive(t, 8, nil), "fail", "", 12},
		{"wrong size fails", folderArchive(t, 8, odd), "fail", "train/dog/odd.png", 0},
		{"wrong size skipped", folderArchive(t, 8, odd), "skip", "", 12},
		{"empty class folder", folderArchive(t, 8, nil, "train/fox/"), "fail", "train/fox", 0},
		{"undecodable image fails", folderArchive(t, 8, map[string][]byte{"test/cat/bad.jpg": []byte("not a jpeg")}), "fail", "test/cat/bad.jpg", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := runDownload(t, fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s, image_size: [8, 8], on_bad_image: %s}\ndownload: {shard_mib: 1}\n", t.TempDir(), tc.src, tc.policy), Options{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := st.Manifest
			if m.Records("train") != tc.wantTrain || m.Records("test") != 12 {
				t.Fatalf("records train=%d test=%d", m.Records("train"), m.Records("test"))
			}
			skipped, _ := m.Meta["skipped"].([]any)
			if tc.policy == "skip" && (len(skipped) != 1 || !strings.Contains(skipped[0].(string), "odd.png")) {
				t.Fatalf("skipped = %v", skipped)
			}
			imgs := readImages(t, m, "test")
			if img := imgs["test/emu/03.png"]; img.Label != 2 || img.Pix[0] != 123 || img.H != 8 || img.C != 3 {
				t.Fatalf("test/emu/03.png decoded as label %d pix[0] %d (%dx%dx%d); have keys %d", img.Label, img.Pix[0], img.H, img.W, img.C, len(imgs))
			}
		})
	}
}

// TestRerunSkipsAndForce checks that a second run skips the finished stage
// quickly, that --force reruns it, and that the outputs are byte-identical.
func TestRerunSkipsAndForce(t *testing.T) {
	yaml := fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\n", t.TempDir(), folderArchive(t, 8, nil))
	st, err := runDownload(t, yaml, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := st.Manifest
	shard := first.Path(first.Split("train")[0].Name)
	before, _ := os.ReadFile(shard)

	start := time.Now()
	st, err = runDownload(t, yaml, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second || !st.Manifest.Finished.Equal(first.Finished) {
		t.Fatalf("second run took %v and finished at %v (first %v): not skipped", took, st.Manifest.Finished, first.Finished)
	}
	st, err = runDownload(t, yaml, Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Manifest.Finished.After(first.Finished) {
		t.Fatal("--force did not rerun the stage")
	}
	after, _ := os.ReadFile(shard)
	if !bytes.Equal(before, after) {
		t.Fatal("rerun wrote different bytes")
	}
}

func TestDownloadToGCS(t *testing.T) {
	testutil.FakeGCS(t, "bkt")
	yaml := fmt.Sprintf("root: gs://bkt/igpt\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\n", folderArchive(t, 8, nil))
	st, err := runDownload(t, yaml, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := st.Manifest
	if !strings.HasPrefix(m.Dir, "gs://bkt/igpt/download/") || m.Records("train") != 12 {
		t.Fatalf("manifest dir %s, train records %d", m.Dir, m.Records("train"))
	}
	if imgs := readImages(t, m, "train"); len(imgs) != 12 {
		t.Fatalf("read back %d train images", len(imgs))
	}
}

// TestRunnersAgree runs the same download on prism and on direct: the
// shards must be byte-identical.
func TestRunnersAgree(t *testing.T) {
	src := folderArchive(t, 8, nil)
	var shards [2]map[string][]byte
	for i, runner := range []string{"prism", "direct"} {
		yaml := fmt.Sprintf("root: %s\nrunner: %s\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\n", t.TempDir(), runner, src)
		st, err := runDownload(t, yaml, Options{})
		if err != nil {
			t.Fatalf("%s: %v", runner, err)
		}
		if st.Manifest.Runner != runner {
			t.Fatalf("manifest runner %q, want %q", st.Manifest.Runner, runner)
		}
		shards[i] = map[string][]byte{}
		for _, f := range st.Manifest.Files {
			shards[i][f.Name], _ = os.ReadFile(st.Manifest.Path(f.Name))
		}
	}
	if len(shards[0]) != 2 || len(shards[0]) != len(shards[1]) { // one unit (the tar) per split
		t.Fatalf("prism wrote %d shards, direct %d", len(shards[0]), len(shards[1]))
	}
	for name, b := range shards[0] {
		if !bytes.Equal(b, shards[1][name]) {
			t.Errorf("%s differs between prism and direct", name)
		}
	}
}
