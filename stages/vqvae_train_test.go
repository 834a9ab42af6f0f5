package stages

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
