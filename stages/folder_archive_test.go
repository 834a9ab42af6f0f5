package stages

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/pipelines"
)

// folderArchiveOf packs images as a <split>/<class>/ tree in a wrapper
// folder, splits interleaved, as a .zip (deflated) or a .tar.
func folderArchiveOf(t *testing.T, kind string, images int, side int) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 5))
	var names []string
	var data [][]byte
	for i := range images {
		split := "train"
		if i%5 == 4 {
			split = "test"
		}
		names = append(names, fmt.Sprintf("set/%s/c%02d/%05d.jpg", split, i%7, i))
		data = append(data, jpegBytes(rng, side, side))
	}
	if kind == "tar" {
		return tarOf(names, data)
	}
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for i, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data[i])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// imageDigests maps the key of every image of a download to its label and
// a digest of its pixels.
func imageDigests(t *testing.T, m *Manifest) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range m.Files {
		err := pipelines.ScanShard(context.Background(), m.Path(f.Name), func(im records.Image) error {
			if _, dup := out[im.Key]; dup {
				return fmt.Errorf("image %s read twice", im.Key)
			}
			out[im.Key] = fmt.Sprintf("%d %dx%dx%d %x", im.Label, im.H, im.W, im.C, sha256.Sum256(im.Pix))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestScaleFolderArchiveWorkerProcesses: a folder .zip or .tar on gs://
// is planned by the launcher from the zip's central directory or the tar's
// headers, never copied to the root's _cache, and read in many units by
// worker processes; the records are those of the whole-archive local read.
// IGPT_ARCHIVE_IMAGES and IGPT_ARCHIVE_SIDE set the images (default 600)
// and their side (default 64) to measure at scale.
func TestScaleFolderArchiveWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test: runs worker processes")
	}
	images := 600
	if s := os.Getenv("IGPT_ARCHIVE_IMAGES"); s != "" {
		images, _ = strconv.Atoi(s)
	}
	side := 64
	if s := os.Getenv("IGPT_ARCHIVE_SIDE"); s != "" {
		side, _ = strconv.Atoi(s)
	}
	defer func(z, r int64) { datasets.ZipUnitBytes, datasets.TarRangeBytes = z, r }(datasets.ZipUnitBytes, datasets.TarRangeBytes)
	datasets.ZipUnitBytes, datasets.TarRangeBytes = 256<<10, 256<<10
	srv := testutil.FakeGCS(t, "data", "out")
	for _, kind := range []string{"zip", "tar"} {
		t.Run(kind, func(t *testing.T) {
			archive := folderArchiveOf(t, kind, images, side)
			putObject(srv, "data", "f."+kind, archive)
			// The whole-archive local read, as before.
			local := filepath.Join(t.TempDir(), "f."+kind)
			if err := os.WriteFile(local, archive, 0o644); err != nil {
				t.Fatal(err)
			}
			lp := planFor(t, fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\n", t.TempDir(), local))
			if err := lp.RunUntil(context.Background(), "download", Options{}); err != nil {
				t.Fatal(err)
			}
			lst, _ := lp.Step("download")
			want := imageDigests(t, lst.Manifest)

			pool := externalWorkers(t)
			before := storage.GCSBytesRead("data")
			p := planFor(t, fmt.Sprintf("root: gs://out/%s\ndataset: {name: folder, source: gs://data/f.%s}\ndownload: {shard_mib: 1}\n", kind, kind))
			if err := p.RunUntil(context.Background(), "download", Options{}); err != nil {
				t.Fatal(err)
			}
			read := storage.GCSBytesRead("data") - before
			if pool.Started() == 0 {
				t.Fatal("no worker process was started: the pipeline ran in the launcher")
			}
			// zip: the central directory (about 70 bytes a member here) and
			// the end record's search; tar: a member's 512-byte header, the
			// last byte of its data and its padding (tar's skip), whatever
			// the image's size: these 2 KB images make that a third.
			limit := int64(images)*100 + 70<<10
			if kind == "tar" {
				limit = int64(images) * 1100
			}
			if read > limit {
				t.Errorf("the launcher read %d bytes of the %d-byte archive (limit %d): it must read only the directory or headers", read, len(archive), limit)
			}
			cached, err := storage.ListSizes(context.Background(), "gs://out/")
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range cached {
				if strings.Contains(o.Path, "/_cache/") {
					t.Errorf("the archive was uploaded to %s", o.Path)
				}
			}
			st, _ := p.Step("download")
			m := st.Manifest
			units, _ := m.Meta["units"].(float64)
			if min := len(archive) / (256 << 10); int(units) < min {
				t.Errorf("%v units, want at least %d (one per 256 KiB)", units, min)
			}
			got := imageDigests(t, m)
			if len(got) != images || len(got) != len(want) {
				t.Fatalf("%d images read in place, %d by the local read, want %d", len(got), len(want), images)
			}
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s: in place %q, local %q", k, got[k], w)
				}
			}
			t.Logf("%s of %d images, %d bytes: the launcher read %d bytes; %v units; graph_bytes %v; %d worker processes",
				kind, images, len(archive), read, units, m.Meta["graph_bytes"], pool.Started())
		})
	}
}
