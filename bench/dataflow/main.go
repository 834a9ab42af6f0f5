// Command dataflow measures what igpt's Dataflow jobs cost the launcher,
// with Dataflow dry runs (the job is built and printed, never submitted)
// against an in-process fake GCS server: for ImageNet-shaped sources of
// several sizes (class tars inside the train tar, plus the validation tar)
// and a WebDataset shard set, the bytes the launcher reads from the source
// bucket while planning, the pipeline proto size of each Beam stage's job
// and the number of units (work items) of the download.
//
//	go run ./bench/dataflow [--worker_binary=infra/bin/igpt-worker] [-classes 10,100,1000]
//
// The upstream outputs a stage's dry run needs are made first on prism, in
// process, from the same sources.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/igpt/igpt/bench/internal/cpuinfo"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/stages"
)

var (
	classes = flag.String("classes", "10,100,1000", "ImageNet class tars per source")
	per     = flag.Int("per_class", 2, "images per class tar")
	val     = flag.Int("val", 200, "validation images")
)

func main() {
	flag.Parse()
	if f := flag.Lookup("worker_binary"); f.Value.String() == "" {
		f.Value.Set("infra/bin/igpt-worker") // infra/build.sh writes it
	}
	beam.Init()
	beamlog.SetLogger(quietBeam{})
	srv := fakeGCS("data", "out")
	defer srv.Stop()
	fmt.Printf("# %s, %d cores; dry runs against a fake GCS server\n", cpuinfo.Model(), cpus())
	fmt.Printf("%-26s %8s %14s %10s %s\n", "source", "units", "launcher_bytes", "per_unit", "pipeline_proto_bytes (download palette quantize)")
	for _, s := range strings.Split(*classes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			log.Fatal(err)
		}
		prefix := fmt.Sprintf("imagenet%d", n)
		total := imageNet(srv, prefix, n, *per, *val)
		measure(fmt.Sprintf("imagenet %d class tars", n), total,
			fmt.Sprintf("dataset: {name: imagenet, source: gs://data/%s}\ndownload: {resize: 16}\npalette: {k: 8}\n", prefix))
	}
	total := webDataset(srv, "wds", 8, 100)
	measure("webdataset 8 shards", total,
		"dataset: {name: webdataset, source: 'gs://data/wds/train-{000000..000007}.tar'}\ndownload: {resize: 16}\npalette: {k: 8}\n")
}

// measure prepares the source's download, palette and quantize outputs on
// prism, then dry-runs each stage on Dataflow and prints one row.
func measure(name string, total int64, cfgText string) {
	ctx := context.Background()
	root := "gs://out/" + strings.ReplaceAll(name, " ", "-")
	cfg, err := stages.ParseConfig([]byte("root: " + root + "\n" + cfgText))
	if err != nil {
		log.Fatal(err)
	}
	cfg.Path = "dataflow.yaml"
	plan, err := stages.NewPlan(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := plan.RunUntil(ctx, "quantize", stages.Options{Log: quiet}); err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	dl, _ := plan.Step("download")
	units := dl.Manifest.Meta["units"]
	set := map[string]string{"dry_run": "true", "project": "igpt-bench", "region": "us-central1",
		"staging_location": "gs://out/staging", "environment_type": ""}
	for k, v := range set {
		if err := flag.Set(k, v); err != nil {
			log.Fatalf("--%s: %v", k, err)
		}
	}
	defer func() { flag.Set("dry_run", "false"); flag.Set("environment_type", "loopback") }()
	var protos []string
	var read int64
	for _, stage := range []string{"download", "palette", "quantize"} {
		var logs bytes.Buffer
		before := storage.GCSBytesRead("data")
		err := plan.RunOne(ctx, stage, stages.Options{DryRun: true, Runner: "dataflow", Force: true, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			log.Fatalf("%s: dry run of %s: %v", name, stage, err)
		}
		if stage == "download" {
			read = storage.GCSBytesRead("data") - before
		}
		protos = append(protos, field(logs.String(), "pipeline_proto_bytes"))
	}
	perUnit := 0.0
	if u, ok := units.(float64); ok && u > 0 {
		perUnit = float64(read) / u
	}
	fmt.Printf("%-26s %8v %14d %10.0f %s (source %d bytes)\n", name, units, read, perUnit, strings.Join(protos, " "), total)
}

// field returns the last value of key=… in slog text lines.
func field(logs, key string) string {
	i := strings.LastIndex(logs, key+"=")
	if i < 0 {
		return "?"
	}
	v := logs[i+len(key)+1:]
	if j := strings.IndexAny(v, " \n"); j >= 0 {
		v = v[:j]
	}
	return v
}

func fakeGCS(buckets ...string) *fakestorage.Server {
	srv, host, err := testutil.StartFakeGCS(buckets...)
	if err != nil {
		log.Fatalf("fake GCS: %v", err)
	}
	os.Setenv("STORAGE_EMULATOR_HOST", host)
	return srv
}

func put(srv *fakestorage.Server, bucket, name string, data []byte) {
	srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name}, Content: data})
}

// imageNet uploads ILSVRC2012_img_train.tar (one tar per class), the
// validation tar and its labels under gs://data/prefix, and returns the
// bytes of the source.
func imageNet(srv *fakestorage.Server, prefix string, classes, perClass, val int) int64 {
	rng := rand.New(rand.NewPCG(uint64(classes), 1))
	var names, wnids []string
	var tars [][]byte
	for c := range classes {
		wnid := fmt.Sprintf("n%08d", 1000000+c*37)
		wnids = append(wnids, wnid)
		var mn []string
		var md [][]byte
		for i := range perClass {
			mn = append(mn, fmt.Sprintf("%s_%d.JPEG", wnid, i))
			md = append(md, testutil.JPEG(rng, 24, 24))
		}
		names, tars = append(names, wnid+".tar"), append(tars, testutil.Tar(mn, md))
	}
	train := testutil.Tar(names, tars)
	put(srv, "data", prefix+"/ILSVRC2012_img_train.tar", train)
	var vn []string
	var vd [][]byte
	var labels strings.Builder
	for i := range val {
		vn, vd = append(vn, fmt.Sprintf("ILSVRC2012_val_%08d.JPEG", i+1)), append(vd, testutil.JPEG(rng, 24, 24))
		fmt.Fprintln(&labels, wnids[rng.IntN(classes)])
	}
	vt := testutil.Tar(vn, vd)
	put(srv, "data", prefix+"/ILSVRC2012_img_val.tar", vt)
	put(srv, "data", prefix+"/validation_labels.txt", []byte(labels.String()))
	return int64(len(train) + len(vt) + labels.Len())
}

// webDataset uploads shards of per samples (000123.jpg + 000123.cls).
func webDataset(srv *fakestorage.Server, prefix string, shards, per int) int64 {
	rng := rand.New(rand.NewPCG(7, 7))
	var total int64
	for s := range shards {
		var names []string
		var data [][]byte
		for i := range per {
			key := fmt.Sprintf("%06d", s*per+i)
			names = append(names, key+".jpg", key+".cls")
			data = append(data, testutil.JPEG(rng, 24, 24), []byte(strconv.Itoa(rng.IntN(10))))
		}
		b := testutil.Tar(names, data)
		total += int64(len(b))
		put(srv, "data", fmt.Sprintf("%s/train-%06d.tar", prefix, s), b)
	}
	return total
}

func cpus() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// quietBeam drops Beam's own log lines (the dry run prints whole jobs).
type quietBeam struct{}

func (quietBeam) Log(context.Context, beamlog.Severity, int, string) {}
