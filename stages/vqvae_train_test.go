package stages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/pipelines"
)

// vqvaeYAML: a tiny VQ-VAE on an 8×8 image folder.
func vqvaeYAML(root, src string, extra string) string {
	return fmt.Sprintf(`root: %s
dataset: {name: folder, source: %s}
download: {shard_mib: 1}
vqvae: {hidden: 8, res_hidden: 4, res_blocks: 1, codes: 16, code_dim: 4, factor: 4, dead_after: 3, batch: 4, steps: 12, lr: 0.003, eval_every: 5, eval_images: 8, checkpoint_every: 4, threads: 2%s}
`, root, src, extra)
}

func TestVQVAETrainRunsAndResumes(t *testing.T) {
	src := folderArchive(t, 8, nil)
	root := t.TempDir()
	p, err := runUntil(t, vqvaeYAML(root, src, ""), "vqvae-train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := p.byName["vqvae-train"]
	m := st.Manifest
	if m.Meta["steps"].(float64) != 12 || m.Meta["eval_mse_255"] == nil || m.Meta["eval_codes_used"] == nil {
		t.Fatalf("vqvae-train meta %v", m.Meta)
	}
	dir := st.Dir
	metrics, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(metrics)), "\n")
	if len(lines) != 12 {
		t.Fatalf("metrics.jsonl has %d lines, want 12", len(lines))
	}
	var evals []int
	for _, l := range lines {
		var mt VQVAEMetric
		if err := json.Unmarshal([]byte(l), &mt); err != nil {
			t.Fatal(err)
		}
		if mt.EvalMSE255 != nil {
			evals = append(evals, mt.Step)
			if !(*mt.EvalPSNR > 0) || *mt.EvalUsed < 1 || *mt.EvalUsed > 16 {
				t.Fatalf("step %d: eval %v dB, %d codes", mt.Step, *mt.EvalPSNR, *mt.EvalUsed)
			}
		}
	}
	if fmt.Sprint(evals) != "[5 10 12]" {
		t.Fatalf("evaluated at steps %v, want [5 10 12]", evals)
	}
	for _, f := range []string{LossPlotFile, ReconPNGFile, CodebookPlotFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	final, err := os.ReadFile(filepath.Join(dir, CheckpointDir, ckptName(12), VQVAEWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	// A run killed after the step-8 checkpoint: no manifest, LATEST at 8,
	// the step-12 checkpoint never written. Rerunning resumes at step 8 and
	// must end with the same bytes as the uninterrupted run.
	os.Remove(filepath.Join(dir, ManifestName))
	os.RemoveAll(filepath.Join(dir, CheckpointDir, ckptName(12)))
	os.WriteFile(filepath.Join(dir, CheckpointDir, LatestFile), []byte(ckptName(8)+"\n"), 0o644)
	p2, err := runUntil(t, vqvaeYAML(root, src, ""), "vqvae-train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(filepath.Join(dir, CheckpointDir, ckptName(12), VQVAEWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(final, again) {
		t.Fatal("resumed run's final weights differ from the uninterrupted run's")
	}
	metrics2, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
	if n := strings.Count(string(metrics2), "\n"); n != 12 {
		t.Fatalf("after resume metrics.jsonl has %d lines, want 12", n)
	}
	// The resumed run's clock counts on from step 8's.
	var prev VQVAEMetric
	for i, l := range strings.Split(strings.TrimSpace(string(metrics2)), "\n") {
		var mt VQVAEMetric
		if err := json.Unmarshal([]byte(l), &mt); err != nil {
			t.Fatal(err)
		}
		if i > 0 && mt.ElapsedS < prev.ElapsedS {
			t.Fatalf("step %d: elapsed_s %v after %v: the resumed run's clock restarted", mt.Step, mt.ElapsedS, prev.ElapsedS)
		}
		prev = mt
	}
	if m, _ := p2.byName["vqvae-train"].Manifest.Meta["minutes"].(float64); m <= 0 || m != prev.ElapsedS/60 {
		t.Fatalf("meta minutes %v, want the last step's elapsed_s/60 = %v", m, prev.ElapsedS/60)
	}
}

func TestVQVAEConfigErrors(t *testing.T) {
	for _, c := range []struct{ from, to, want string }{
		{"factor: 4", "factor: 3", "vqvae.factor = 3"},
		{"codes: 16", "codes: 70000", "vqvae.codes is 70000: want 1..65535"},
		{"batch: 4", "batch: -1", "vqvae.batch is -1: want 1..65536"},
		{"res_hidden: 4", "res_hidden: -2", "vqvae.res_hidden is -2: want 1..4096"},
	} {
		_, err := ParseConfig([]byte(strings.Replace(vqvaeYAML("/tmp/x", "/tmp/y", ""), c.from, c.to, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.to, err, c.want)
		}
	}
	// factor 16 is valid alone but does not divide 8×8 images
	src := folderArchive(t, 8, nil)
	_, err := runUntil(t, strings.Replace(vqvaeYAML(t.TempDir(), src, ""), "factor: 4", "factor: 16", 1), "vqvae-train", Options{})
	if err == nil || !strings.Contains(err.Error(), "vqvae.factor = 16 must divide") {
		t.Fatalf("factor 16 on 8×8 images: %v", err)
	}
}

// TestVQVAETrainEvaluatesOnVal: the evaluations during training read a
// val split carved from train (by pipelines.InVal, held out of training),
// and test is read once, at the end. Train and val images are smooth
// gradients, test images noise that no tiny VQ-VAE reconstructs: an
// evaluation that read test would score like the final test figure.
func TestVQVAETrainEvaluatesOnVal(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	var trainKeys []string
	for i := range 40 {
		name := fmt.Sprintf("train/c%d/%02d.png", i%2, i)
		trainKeys = append(trainKeys, name)
		add(name, pngBytes(8, 8, uint8(i*6)))
	}
	r := rand.New(rand.NewPCG(5, 5))
	for i := range 8 {
		img := image.NewRGBA(image.Rect(0, 0, 8, 8))
		for j := range img.Pix {
			img.Pix[j] = uint8(r.IntN(256)) // noise (alpha too: PNG keeps it, RGB drops it)
		}
		var b bytes.Buffer
		png.Encode(&b, img)
		add(fmt.Sprintf("test/c%d/%02d.png", i%2, i), b.Bytes())
	}
	tw.Close()
	zw.Close()
	src := filepath.Join(t.TempDir(), "split.tar.gz")
	os.WriteFile(src, buf.Bytes(), 0o644)

	p, err := runUntil(t, vqvaeYAML(t.TempDir(), src, ", val_fraction: 0.25"), "vqvae-train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	meta := p.byName["vqvae-train"].Manifest.Meta
	// Which keys the download stored (the folder source keys images by
	// their path) decide the carve; count it independently.
	dl := p.byName["download"].Manifest
	val := 0
	for _, f := range dl.Split("train") {
		err := pipelines.ScanShard(context.Background(), dl.Path(f.Name), func(im records.Image) error {
			if pipelines.InVal(0, 0.25, im.Key) {
				val++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if val == 0 || val == 40 {
		t.Fatalf("the carve held out %d of 40 train images: the test needs some of each", val)
	}
	num := func(k string) float64 { v, _ := meta[k].(float64); return v }
	if num("eval_images") != float64(min(val, 8)) || num("train_images") != float64(40-val) || num("test_images") != 8 || meta["eval_split"] != "val" {
		t.Fatalf("meta eval_images %v train_images %v test_images %v eval_split %v; want %d val (eval_images 8), %d train, 8 test",
			meta["eval_images"], meta["train_images"], meta["test_images"], meta["eval_split"], min(val, 8), 40-val)
	}
	if ev, te := num("eval_mse_255"), num("test_mse_255"); !(ev > 0 && te > 1.5*ev) {
		t.Fatalf("val MSE %v, test MSE %v: the noise test images must reconstruct far worse than the held-out val images", ev, te)
	}
}

// TestVQVAETrainMaxImages: vqvae.max_images caps the train images the
// stage holds (and trains on), whatever the dataset's size, and the
// memory check counts them before they are read, naming the key.
func TestVQVAETrainMaxImages(t *testing.T) {
	src := folderArchive(t, 8, nil)
	p, err := runUntil(t, vqvaeYAML(t.TempDir(), src, ", max_images: 5, val_fraction: 0"), "vqvae-train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := p.byName["vqvae-train"].Manifest.Meta["train_images"].(float64); n != 5 {
		t.Fatalf("train_images %v with max_images 5 of 12", n)
	}
	dl := p.byName["download"].Manifest
	for _, tc := range []struct {
		max      int
		held     int64
		perShard int
	}{{0, 12, 0}, {5, 5, (5 + len(dl.Split("train")) - 1) / len(dl.Split("train"))}, {100, 12, (100 + len(dl.Split("train")) - 1) / len(dl.Split("train"))}} {
		if held, per := vqvaeTrainImages(dl, tc.max); held != tc.held || per != tc.perShard {
			t.Errorf("max_images %d: holds %d, %d a shard; want %d, %d", tc.max, held, per, tc.held, tc.perShard)
		}
	}
	defer func(f func() (float64, bool)) { machineMemory = f }(machineMemory)
	machineMemory = func() (float64, bool) { return 1000, true }
	_, err = runUntil(t, vqvaeYAML(t.TempDir(), src, ", max_images: 7"), "vqvae-train", Options{})
	if err == nil || !strings.Contains(err.Error(), "vqvae.max_images 7 (7 train images held)") || !strings.Contains(err.Error(), "set or lower vqvae.max_images") {
		t.Fatalf("over memory: %v", err)
	}
}
