package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// trainYAML is a tiny but real experiment: an 8×8 image folder, a 16-colour
// palette and a 2-layer model of width d trained for steps steps.
func trainYAML(root, src string, steps, d, batch int, lr float64) string {
	return fmt.Sprintf(`root: %s
dataset: {name: folder, source: %s}
download: {shards: {train: 2, test: 1}}
palette: {k: 16}
quantize: {val_fraction: 0.25, shards: {train: 3}}
train: {model: nano, layers: 2, d: %d, heads: 4, batch: %d, steps: %d, warmup_steps: 5, lr: %g, eval_every: 10, eval_records: 4, checkpoint_every: 7, threads: 2}
`, root, src, d, batch, steps, lr)
}

func trainDir(t *testing.T, root string) string {
	dirs, _ := filepath.Glob(filepath.Join(root, "train", "*"))
	if len(dirs) != 1 {
		t.Fatalf("train folders: %v", dirs)
	}
	return dirs[0]
}

// finalFiles reads the final checkpoint's weights and optimiser state.
func finalFiles(t *testing.T, dir string, step int) (w, o []byte) {
	t.Helper()
	ck := filepath.Join(dir, CheckpointDir, ckptName(step))
	w, err := os.ReadFile(filepath.Join(ck, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	o, err = os.ReadFile(filepath.Join(ck, OptimFile))
	if err != nil {
		t.Fatal(err)
	}
	return w, o
}

func TestTrainRunsAndResumesInProcess(t *testing.T) {
	src := folderArchive(t, 8, nil)
	root := t.TempDir()
	p, err := runUntil(t, trainYAML(root, src, 20, 32, 2, 0.01), "train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := p.byName["train"].Manifest
	if m.Meta["steps"].(float64) != 20 || m.Meta["final_val_loss"] == nil {
		t.Fatalf("train meta %v", m.Meta)
	}
	dir := trainDir(t, root)
	metrics, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
	if n := strings.Count(string(metrics), "\n"); n != 20 {
		t.Fatalf("metrics.jsonl has %d lines, want 20", n)
	}
	var first, last Metric
	lines := strings.Split(strings.TrimSpace(string(metrics)), "\n")
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if !(last.Loss < first.Loss) {
		t.Fatalf("loss did not fall: %v -> %v", first.Loss, last.Loss)
	}
	if png, _ := os.ReadFile(filepath.Join(dir, LossPlotFile)); !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal("loss.png is not a PNG")
	}
	// Two checkpoints are kept: steps 14 and 20.
	ck, _ := filepath.Glob(filepath.Join(dir, CheckpointDir, "step-*"))
	if len(ck) != 2 {
		t.Fatalf("checkpoints kept: %v", ck)
	}
}

// TestTrainDivergesCleanly makes the loss explode with an absurd learning
// rate: the run stops naming the step and keeps the last good checkpoint.
func TestTrainDivergesCleanly(t *testing.T) {
	src := folderArchive(t, 8, nil)
	_, err := runUntil(t, trainYAML(t.TempDir(), src, 60, 32, 2, 1e30), "train", Options{})
	if err == nil || !strings.Contains(err.Error(), "lower train.lr") || !(strings.Contains(err.Error(), "NaN") || strings.Contains(err.Error(), "Inf")) {
		t.Fatalf("diverging run: %v", err)
	}
}

// buildIgpt builds the igpt binary once per test binary.
func buildIgpt(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "igpt")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/igpt")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestTrainKilledResumesBitIdentical kills a training process with SIGKILL
// at a random moment, then with SIGINT, restarts it each time, and checks
// that the final weights and optimiser state are byte-identical to an
// uninterrupted run's.
func TestTrainKilledResumesBitIdentical(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and trains three times")
	}
	bin := buildIgpt(t)
	src := folderArchive(t, 8, nil)
	const steps = 120
	run := func(root string, interrupt func(cmd *exec.Cmd, dir string)) {
		cfg := filepath.Join(root, "exp.yaml")
		os.WriteFile(cfg, []byte(trainYAML(root, src, steps, 64, 4, 0.01)), 0o644)
		for attempt := 0; ; attempt++ {
			cmd := exec.Command(bin, "run", cfg, "--until=train", "--log_level=warn")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if attempt == 0 && interrupt != nil {
				interrupt(cmd, root)
			}
			err := cmd.Wait()
			if err == nil {
				return
			}
			if attempt > 0 || interrupt == nil {
				t.Fatalf("igpt run: %v\n%s", err, out.String())
			}
			t.Logf("interrupted run: %v; %s", err, lastLine(out.String()))
		}
	}
	waitCheckpoint := func(root string) {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			if m, _ := filepath.Glob(filepath.Join(root, "train", "*", CheckpointDir, LatestFile)); len(m) > 0 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no checkpoint appeared")
	}
	refRoot := t.TempDir()
	run(refRoot, nil)
	wantW, wantO := finalFiles(t, trainDir(t, refRoot), steps)

	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			root := t.TempDir()
			killed := false
			run(root, func(cmd *exec.Cmd, root string) {
				waitCheckpoint(root)
				time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
				if err := cmd.Process.Signal(sig); err == nil {
					killed = true
				}
			})
			if !killed {
				t.Fatal("the process ended before it could be interrupted")
			}
			if _, err := os.Stat(filepath.Join(trainDir(t, root), ManifestName)); err != nil {
				t.Fatalf("no manifest after the resumed run: %v", err)
			}
			gotW, gotO := finalFiles(t, trainDir(t, root), steps)
			if !bytes.Equal(gotW, wantW) || !bytes.Equal(gotO, wantO) {
				t.Fatal("resumed run's final weights or optimiser state differ from the uninterrupted run's")
			}
			var ms []Metric
			dec := json.NewDecoder(bytes.NewReader(must(os.ReadFile(filepath.Join(trainDir(t, root), MetricsFile)))))
			for dec.More() {
				var m Metric
				dec.Decode(&m)
				ms = append(ms, m)
			}
			for i, m := range ms {
				if m.Step != i+1 {
					t.Fatalf("metrics line %d is step %d: resumed metrics repeat or skip steps", i, m.Step)
				}
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

var _ = context.Background
