package stages

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/igpt/igpt/internal/beamboot"
	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/pipelines"
)

// jpegBytes and tarOf are testutil's source generators, shared with
// bench/dataflow.
var (
	jpegBytes = testutil.JPEG
	tarOf     = testutil.Tar
)

func putObject(srv *fakestorage.Server, bucket, name string, data []byte) {
	srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name}, Content: data})
}

// imageNetSource uploads an ImageNet-shaped source under gs://bucket/prefix:
// ILSVRC2012_img_train.tar holding one tar per class of perClass JPEGs of
// varied sizes, ILSVRC2012_img_val.tar and validation_labels.txt. It
// returns the total bytes of the class tars.
func imageNetSource(t *testing.T, srv *fakestorage.Server, bucket, prefix string, classes, perClass, val int) int64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(classes), uint64(perClass)))
	var names []string
	var tars [][]byte
	var inner int64
	wnids := make([]string, classes)
	for c := range classes {
		wnids[c] = fmt.Sprintf("n%08d", 1000000+c*37)
		var mn []string
		var md [][]byte
		for i := range perClass {
			mn = append(mn, fmt.Sprintf("%s_%d.JPEG", wnids[c], i))
			md = append(md, jpegBytes(rng, 12+rng.IntN(12), 12+rng.IntN(12)))
		}
		b := tarOf(mn, md)
		inner += int64(len(b))
		names = append(names, wnids[c]+".tar")
		tars = append(tars, b)
	}
	putObject(srv, bucket, prefix+"/ILSVRC2012_img_train.tar", tarOf(names, tars))
	var vn []string
	var vd [][]byte
	var labels strings.Builder
	for i := range val {
		vn = append(vn, fmt.Sprintf("ILSVRC2012_val_%08d.JPEG", i+1))
		vd = append(vd, jpegBytes(rng, 16, 20))
		fmt.Fprintln(&labels, wnids[rng.IntN(classes)])
	}
	putObject(srv, bucket, prefix+"/ILSVRC2012_img_val.tar", tarOf(vn, vd))
	putObject(srv, bucket, prefix+"/validation_labels.txt", []byte(labels.String()))
	return inner
}

// webDatasetSource uploads shards of samples (000123.jpg + 000123.cls).
func webDatasetSource(srv *fakestorage.Server, bucket, prefix string, shards, per, classes int) {
	rng := rand.New(rand.NewPCG(7, 7))
	for s := range shards {
		var names []string
		var data [][]byte
		for i := range per {
			key := fmt.Sprintf("%06d", s*per+i)
			names = append(names, key+".jpg", key+".cls")
			data = append(data, jpegBytes(rng, 16, 16), []byte(fmt.Sprint(rng.IntN(classes))))
		}
		putObject(srv, bucket, fmt.Sprintf("%s/train-%06d.tar", prefix, s), tarOf(names, data))
	}
}

// externalWorkers serves a worker pool that starts this test binary as
// separate worker processes and points the runner at it.
func externalWorkers(t *testing.T) *beamboot.Pool {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := beamboot.StartPool(exe)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Stop)
	restore, err := beamboot.UseWorkers(pool.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restore)
	return pool
}

func planFor(t *testing.T, yaml string) *Plan {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Path = "scale.yaml"
	p, err := NewPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestScaleImageNetWorkerProcesses runs download → palette → quantize of an
// ImageNet-shaped source on the GCS emulator with the workers as separate
// processes started through an external worker pool, as on Dataflow. The
// launcher must only list the source (its reads from the source bucket are
// tar headers, not images), every class tar must be its own unit, and each
// stage's job graph must be small and the same at two dataset sizes.
func TestScaleImageNetWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test: runs worker processes")
	}
	srv := testutil.FakeGCS(t, "data", "out")
	const classes = 120
	sizes := []int{10, 20} // images per class
	var graphs []map[string]any
	for run, perClass := range sizes {
		prefix := fmt.Sprintf("imagenet%d", run)
		inner := imageNetSource(t, srv, "data", prefix, classes, perClass, 2*classes)
		pool := externalWorkers(t)
		before := storage.GCSBytesRead("data")
		p := planFor(t, fmt.Sprintf(`root: gs://out/run%d
dataset: {name: imagenet, source: gs://data/%s}
download: {resize: 16, shard_mib: 1}
palette: {k: 16}
quantize: {val_fraction: 0.1}
`, run, prefix))
		if err := p.RunUntil(context.Background(), "quantize", Options{}); err != nil {
			t.Fatalf("%d per class: %v", perClass, err)
		}
		read := storage.GCSBytesRead("data") - before
		if pool.Started() == 0 {
			t.Fatal("no worker process was started: the pipeline ran in the launcher")
		}
		// Per class tar the launcher reads its 512-byte header, the last
		// byte of its data (tar's skip) and its padding.
		if read > int64(classes)*1100 || read*20 > inner {
			t.Errorf("%d per class: the launcher read %d bytes of the source (class tars hold %d): it must only list and read headers", perClass, read, inner)
		}
		dl, _ := p.Step("download")
		m := dl.Manifest
		if m.Records("train") != int64(classes*perClass) || m.Records("test") != int64(2*classes) {
			t.Errorf("records train %d test %d, want %d and %d", m.Records("train"), m.Records("test"), classes*perClass, 2*classes)
		}
		if u := m.Meta["units"]; u != float64(classes+1) {
			t.Errorf("units %v, want one per class tar plus the val tar: %d", u, classes+1)
		}
		units := map[string]bool{}
		for _, f := range m.Files {
			units[f.Name[:strings.LastIndex(f.Name, "-part")]] = true
		}
		if len(units) != classes+1 {
			t.Errorf("shards come from %d units, want %d", len(units), classes+1)
		}
		g := map[string]any{}
		for _, name := range []string{"download", "palette", "quantize"} {
			st, _ := p.Step(name)
			b, ok := st.Manifest.Meta["graph_bytes"].(float64)
			if !ok || b <= 0 || b > 16<<10 {
				t.Errorf("%s: graph_bytes %v, want a few KB (under 16 KiB)", name, st.Manifest.Meta["graph_bytes"])
			}
			g[name] = b
		}
		t.Logf("%d images per class: launcher read %d source bytes (class tars %d); job graph bytes %v; %d worker processes", perClass, read, inner, g, pool.Started())
		graphs = append(graphs, g)
	}
	for _, name := range []string{"download", "palette", "quantize"} {
		// The graph carries the stage's config compressed, with upstream keys
		// that differ between the two datasets, so its size moves by a few
		// bytes; a list of images or units in it would add thousands.
		if d := graphs[1][name].(float64) - graphs[0][name].(float64); d > maxGraphGrowth || d < -maxGraphGrowth {
			t.Errorf("%s: job graph %v bytes at %d images per class, %v at %d: it grows with the data", name, graphs[0][name], sizes[0], graphs[1][name], sizes[1])
		}
	}
}

// TestScaleWebDatasetWorkerProcesses: a brace pattern of tar shards on
// GCS, each shard one unit read by a worker process; the launcher lists
// and reads nothing of them.
func TestScaleWebDatasetWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test: runs worker processes")
	}
	srv := testutil.FakeGCS(t, "data", "out")
	webDatasetSource(srv, "data", "wds", 5, 200, 100)
	externalWorkers(t)
	before := storage.GCSBytesRead("data")
	p := planFor(t, "root: gs://out/wds\ndataset: {name: webdataset, source: 'gs://data/wds/train-{000000..000004}.tar'}\ndownload: {shard_mib: 1}\n")
	if err := p.RunUntil(context.Background(), "download", Options{}); err != nil {
		t.Fatal(err)
	}
	if read := storage.GCSBytesRead("data") - before; read != 0 {
		t.Errorf("the launcher read %d bytes of the WebDataset shards; it must only list them", read)
	}
	dl, _ := p.Step("download")
	m := dl.Manifest
	if m.Records("train") != 1000 || m.Meta["units"] != float64(5) {
		t.Errorf("records %d, units %v; want 1000 and 5", m.Records("train"), m.Meta["units"])
	}
	if c, _ := m.Meta["classes"].([]any); len(c) == 0 || len(c) > 100 {
		t.Errorf("classes %v: want the numbers 0 … the largest .cls", m.Meta["classes"])
	}
}

// TestDataflowDryRunImageNet prepares a small ImageNet-shaped source on
// prism, then builds every Beam stage's Dataflow job with --dry_run (with a
// prebuilt worker binary checked first): each job is printed, not
// submitted, its graph size is reported, and no manifest is rewritten.
func TestDataflowDryRunImageNet(t *testing.T) {
	srv := testutil.FakeGCS(t, "data", "out")
	imageNetSource(t, srv, "data", "imagenet", 24, 4, 24)
	yaml := "root: gs://out/dry\ndataset: {name: imagenet, source: gs://data/imagenet}\ndownload: {resize: 16}\npalette: {k: 8}\n"
	p := planFor(t, yaml)
	if err := p.RunUntil(context.Background(), "quantize", Options{}); err != nil {
		t.Fatal(err)
	}
	worker := filepath.Join(buildInfra(t), "igpt-worker")
	setFlags(t, map[string]string{
		"dry_run": "true", "project": "igpt-test", "region": "us-central1",
		"staging_location": "gs://out/staging", "worker_binary": worker,
		"environment_type": "", // prism set it to loopback in this process
	})
	for _, name := range []string{"download", "palette", "quantize"} {
		logs := &captureLog{}
		beamlog.SetLogger(logs)
		var out bytes.Buffer
		p := planFor(t, yaml)
		st, _ := p.Step(name)
		finished := st.Manifest.Finished
		err := p.RunOne(context.Background(), name, Options{DryRun: true, Runner: "dataflow", Force: true, Log: slog.New(slog.NewTextHandler(&out, nil))})
		beamlog.SetLogger(&beamlog.Standard{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		all := strings.Join(logs.msgs, "\n")
		if !strings.Contains(all, "Dry-run: not submitting job") || !strings.Contains(all, name+"/") {
			t.Errorf("%s: no dry-run job naming the stage's transforms; Beam logged:\n%.1500s", name, all)
		}
		if !strings.Contains(out.String(), "pipeline_proto_bytes=") {
			t.Errorf("%s: the job's size is not reported; igpt logged:\n%s", name, out.String())
		}
		m, err := ReadManifest(context.Background(), st.Dir)
		if err != nil || !m.Finished.Equal(finished) {
			t.Errorf("%s: the dry run changed the manifest: %v", name, err)
		}
	}
}

// TestScaleFolderPrefixWorkerProcesses: an image folder tree under a gs://
// prefix is listed, never read, by the launcher; each unit is at most 1000
// images of one class, read by worker processes.
func TestScaleFolderPrefixWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test: runs worker processes")
	}
	srv := testutil.FakeGCS(t, "data", "out")
	rng := rand.New(rand.NewPCG(3, 3))
	counts := map[string]int{"train/cat": 1001, "train/dog": 40, "test/cat": 10, "test/dog": 10}
	for dir, n := range counts {
		for i := range n {
			putObject(srv, "data", fmt.Sprintf("tree/%s/%04d.jpg", dir, i), jpegBytes(rng, 8, 8))
		}
	}
	externalWorkers(t)
	before := storage.GCSBytesRead("data")
	p := planFor(t, "root: gs://out/tree\ndataset: {name: folder, source: gs://data/tree}\ndownload: {shard_mib: 1}\n")
	if err := p.RunUntil(context.Background(), "download", Options{}); err != nil {
		t.Fatal(err)
	}
	if read := storage.GCSBytesRead("data") - before; read != 0 {
		t.Errorf("the launcher read %d bytes of the image tree; it must only list it", read)
	}
	dl, _ := p.Step("download")
	m := dl.Manifest
	if m.Records("train") != 1041 || m.Records("test") != 20 || m.Meta["units"] != float64(5) {
		t.Errorf("records train %d test %d, units %v; want 1041, 20 and 5 (cat's 1001 train images make two units)",
			m.Records("train"), m.Records("test"), m.Meta["units"])
	}
}

// TestImageNetValTarInRanges downloads an ImageNet-shaped source whose
// validation tar is cut into 2 KiB ranges (datasets.TarRangeBytes; 128
// MiB in use) on prism: every validation image is read exactly once, with
// its label, and each range is its own unit.
func TestImageNetValTarInRanges(t *testing.T) {
	defer func(b int64) { datasets.TarRangeBytes = b }(datasets.TarRangeBytes)
	datasets.TarRangeBytes = 2048
	srv := testutil.FakeGCS(t, "data", "out")
	const classes, val = 6, 40
	imageNetSource(t, srv, "data", "in", classes, 2, val)
	obj, err := srv.GetObject("data", "in/ILSVRC2012_img_val.tar")
	if err != nil {
		t.Fatal(err)
	}
	ranges := (int64(len(obj.Content)) + 2047) / 2048
	p := planFor(t, "root: "+t.TempDir()+"\ndataset: {name: imagenet, source: gs://data/in}\ndownload: {resize: 16, shard_mib: 1}\n")
	if err := p.RunUntil(context.Background(), "download", Options{}); err != nil {
		t.Fatal(err)
	}
	dl, _ := p.Step("download")
	m := dl.Manifest
	if m.Records("test") != val || m.Meta["units"] != float64(classes+int(ranges)) {
		t.Fatalf("test records %d, units %v; want %d records and %d units (%d class tars + the %d-byte val tar in %d ranges)",
			m.Records("test"), m.Meta["units"], val, classes+int(ranges), classes, len(obj.Content), ranges)
	}
	keys := map[string]bool{}
	for _, f := range m.Split("test") {
		err := pipelines.ScanShard(context.Background(), m.Path(f.Name), func(im records.Image) error {
			if keys[im.Key] {
				return fmt.Errorf("image %s read twice", im.Key)
			}
			keys[im.Key] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(keys) != val {
		t.Fatalf("%d distinct validation images, want %d", len(keys), val)
	}
}
