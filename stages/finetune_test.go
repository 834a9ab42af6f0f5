package stages

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/igpt/igpt/model"
)

// finetuneYAML is trainYAML's tiny experiment plus a finetune section.
func finetuneYAML(root, src, section string) string {
	return trainYAML(root, src, 20, 32, 2, 0.01) + "finetune: " + section + "\n"
}

const finetuneSection = "{batch: 4, steps: 30, warmup_steps: 3, lr: 0.003, eval_every: 10, checkpoint_every: 7, patience: 0, threads: 2}"

// runFinetune plans yaml and runs up to finetune with ctx.
func runFinetune(ctx context.Context, t *testing.T, yaml string) (*Plan, error) {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, p.RunUntil(ctx, "finetune", Options{})
}

func finetuneDir(t *testing.T, root string) string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(root, "finetune", "*"))
	if len(dirs) != 1 {
		t.Fatalf("finetune folders: %v", dirs)
	}
	return dirs[0]
}

// TestFinetuneRunsResumesAndScores fine-tunes a trained model on the tiny
// labelled folder, once straight through and once interrupted at step 15
// and rerun: the resumed run ends with the same final weights, moments,
// best weights and test accuracy, byte for byte, and its report, curve and
// metrics are there.
func TestFinetuneRunsResumesAndScores(t *testing.T) {
	src := folderArchive(t, 8, nil)
	rootA, rootB := t.TempDir(), t.TempDir()
	pa, err := runFinetune(context.Background(), t, finetuneYAML(rootA, src, finetuneSection))
	if err != nil {
		t.Fatal(err)
	}
	ma := pa.byName["finetune"].Manifest
	out, err := ReadFinetuneOutput(ma)
	if err != nil {
		t.Fatal(err)
	}
	if out.Steps != 30 || out.Stopped != "steps" || out.BestStep == 0 || out.TestAcc <= 0 || out.TestAcc > 1 {
		t.Fatalf("finetune output %+v", out)
	}
	dirA := finetuneDir(t, rootA)
	metrics, _ := os.ReadFile(filepath.Join(dirA, MetricsFile))
	if n := strings.Count(string(metrics), "\n"); n != 3 {
		t.Fatalf("metrics.jsonl has %d lines, want 3 (one per evaluation)", n)
	}
	if png, _ := os.ReadFile(filepath.Join(dirA, FinetunePlotFile)); !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal("finetune.png is not a PNG")
	}
	if rep, _ := os.ReadFile(filepath.Join(dirA, FinetuneReport)); !strings.Contains(string(rep), "| fine-tuned (pretrained) |") {
		t.Fatalf("report:\n%s", rep)
	}

	ctx, cancel := context.WithCancel(context.Background())
	finetuneAfterStep = func(step int) {
		if step == 15 {
			cancel()
		}
	}
	_, err = runFinetune(ctx, t, finetuneYAML(rootB, src, finetuneSection))
	finetuneAfterStep = nil
	if err == nil || !strings.Contains(err.Error(), "rerun the same command to resume") || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	dirB := finetuneDir(t, rootB)
	if _, err := os.Stat(filepath.Join(dirB, CheckpointDir, ckptName(15))); err != nil {
		t.Fatalf("no checkpoint at the interruption: %v", err)
	}
	if png, _ := os.ReadFile(filepath.Join(dirB, FinetunePlotFile)); !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal("the interrupted run left no finetune.png of its curve so far")
	}
	pb, err := runFinetune(context.Background(), t, finetuneYAML(rootB, src, finetuneSection))
	if err != nil {
		t.Fatal(err)
	}
	outB, _ := ReadFinetuneOutput(pb.byName["finetune"].Manifest)
	bestA, _ := os.ReadFile(filepath.Join(dirA, BestFile))
	bestB, _ := os.ReadFile(filepath.Join(dirB, BestFile))
	if !bytes.Equal(bestA, bestB) || outB.TestAcc != out.TestAcc || outB.BestStep != out.BestStep {
		t.Fatalf("resumed run differs: best files equal %v, %+v vs %+v", bytes.Equal(bestA, bestB), outB, out)
	}
	for _, f := range []string{WeightsFile, OptimFile, HeadFile} {
		a, _ := os.ReadFile(filepath.Join(dirA, CheckpointDir, ckptName(30), f))
		b, errB := os.ReadFile(filepath.Join(dirB, CheckpointDir, ckptName(30), f))
		if errB != nil || len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("step-30 %s of the resumed run differs from the uninterrupted one's (%v)", f, errB)
		}
	}
	if _, head, meta, err := model.LoadClassifier(bytes.NewReader(bestB)); err != nil || head.Classes != 3 || meta["step"] == "" {
		t.Fatalf("best.safetensors: %v classes %v meta %v", err, head, meta)
	}
}

// TestFinetuneLearnsAndBaseline checks that fine-tuning learns the tiny
// folder's three classes (each a distinct red level) well above chance,
// and that finetune.init: random is the supervised baseline: it runs
// without the train stage.
func TestFinetuneLearnsAndBaseline(t *testing.T) {
	src := folderArchive(t, 8, nil)
	root := t.TempDir()
	section := "{batch: 6, steps: 60, warmup_steps: 3, lr: 0.003, eval_every: 20, patience: 0, threads: 2, init: random, gen_weight: 0}"
	p, err := runFinetune(context.Background(), t, finetuneYAML(root, src, section))
	if err != nil {
		t.Fatal(err)
	}
	if p.byName["train"].Done() {
		t.Fatal("finetune.init: random ran the train stage")
	}
	if got := p.byName["finetune"].Stage.Upstream(p.Config); len(got) != 1 || got[0] != "quantize" {
		t.Fatalf("random-init finetune upstream %v", got)
	}
	out, _ := ReadFinetuneOutput(p.byName["finetune"].Manifest)
	if out.Init != FinetuneRandom || out.TestAcc < 0.75 {
		t.Fatalf("supervised baseline on three colour classes: %+v, want test accuracy >= 0.75", out)
	}
}

// TestFinetuneConfig checks the finetune section's defaults and refusals.
func TestFinetuneConfig(t *testing.T) {
	base := "dataset: {name: folder, source: x.tar}\n"
	for _, c := range []struct {
		name, yaml, err string
	}{
		{"defaults", base, ""},
		{"bad init", base + "finetune: {init: scratch}", "finetune.init is \"scratch\""},
		{"negative pad", base + "finetune: {pad: -1}", "finetune.pad is -1"},
		{"flip probability", base + "finetune: {hflip: 2}", "finetune.hflip is 2: want [0, 1]"},
		{"vqvae flip", base + "tokens: vqvae\nfinetune: {hflip: 0.5}", "flipping a grid of VQ codes"},
		{"vqvae default", base + "tokens: vqvae\nfinetune: {}", ""},
		{"warmup", base + "finetune: {steps: 10, warmup_steps: 20}", "warmup_steps <= steps"},
		{"unknown key", base + "finetune: {patiense: 3}", "did you mean finetune.patience"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(c.yaml))
			if c.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if *cfg.Finetune.GenWeight != 1 || cfg.Finetune.Init != FinetunePretrained {
					t.Fatalf("defaults %+v", cfg.Finetune)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("got %v, want an error containing %q", err, c.err)
			}
		})
	}
	// finetune is a final of igpt run only when the config has its section.
	for _, c := range []struct {
		yaml string
		want bool
	}{{base, false}, {base + "finetune: {steps: 5}", true}} {
		cfg, err := ParseConfig([]byte(c.yaml))
		if err != nil {
			t.Fatal(err)
		}
		p, err := NewPlan(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(strings.Join(p.finals(), " "), "finetune")
		if got != c.want {
			t.Errorf("%q: finals %v", c.yaml, p.finals())
		}
	}
}

// TestAugmentIsPaddedCrop checks shiftFlip against an explicit
// construction: the grid reflection-padded (numpy's "reflect"), cropped at
// every offset, then mirrored; and that augment's draws cover the offsets
// and flip about as often as asked.
func TestAugmentIsPaddedCrop(t *testing.T) {
	const h, w, pad = 3, 4, 2
	src := make([]int32, h*w)
	for i := range src {
		src[i] = int32(i)
	}
	// padded [h+2p, w+2p], built row by row the way numpy.pad(mode="reflect") does
	ref := func(i, n int) int {
		for i < 0 || i >= n {
			if i < 0 {
				i = -i
			} else {
				i = 2*(n-1) - i
			}
		}
		return i
	}
	padded := make([][]int32, h+2*pad)
	for y := range padded {
		padded[y] = make([]int32, w+2*pad)
		for x := range padded[y] {
			padded[y][x] = src[ref(y-pad, h)*w+ref(x-pad, w)]
		}
	}
	if got := padded[0][0]; got != src[2*w+2] {
		t.Fatalf("reference pad corner %d, want %d", got, src[2*w+2])
	}
	dst := make([]int32, h*w)
	for dy := -pad; dy <= pad; dy++ {
		for dx := -pad; dx <= pad; dx++ {
			for _, flip := range []bool{false, true} {
				shiftFlip(dst, src, h, w, dy, dx, flip)
				for y := range h {
					for x := range w {
						xx := x
						if flip {
							xx = w - 1 - x
						}
						if want := padded[y+dy+pad][xx+dx+pad]; dst[y*w+x] != want {
							t.Fatalf("dy %d dx %d flip %v: [%d,%d] = %d, want %d", dy, dx, flip, y, x, dst[y*w+x], want)
						}
					}
				}
			}
		}
	}
	// augment: no pad and no flip leaves the batch alone; with both, the
	// batch is a permutation of each grid and about half are flipped.
	const B = 400
	tok := make([]int32, B*h*w)
	for b := range B {
		copy(tok[b*h*w:], src)
	}
	orig := append([]int32(nil), tok...)
	augment(tok, B, h, w, 0, 0, rand.New(rand.NewPCG(1, 1)), make([]int32, h*w))
	if !slices.Equal(tok, orig) {
		t.Fatal("augment with pad 0 and flip 0 changed the batch")
	}
	augment(tok, B, 1, h*w, 0, 0.5, rand.New(rand.NewPCG(1, 1)), make([]int32, h*w))
	flipped := 0
	for b := range B {
		if tok[b*h*w] == src[h*w-1] {
			flipped++
		}
	}
	if flipped < B/2-60 || flipped > B/2+60 {
		t.Fatalf("%d of %d flipped with p = 0.5", flipped, B)
	}
}
