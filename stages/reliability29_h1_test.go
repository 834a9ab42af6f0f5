package stages

// Issue 29, round two (docs/reliability.md, "Issue 29: round two"): paths
// read from files escaping their folder, resume state that does not fit
// the run, hostile VQ-VAE weights, user-given inputs that never end.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/datasets"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/vqvae"
)

// firstLineHas fails the test unless err's first line holds every want.
func firstLineHas(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want an error naming %q", want)
	}
	first := strings.SplitN(err.Error(), "\n", 2)[0]
	for _, w := range want {
		if !strings.Contains(first, w) {
			t.Errorf("error does not name %q: %v", w, err)
		}
	}
}

// TestReliability29_1_ManifestPathEscape: a path a manifest or a unit list
// holds (vqvae-train's and train's meta.checkpoint, a unit's member) that
// leads outside its folder is refused through storage.Within, naming the
// manifest and field, even when the file outside exists.
func TestReliability29_1_ManifestPathEscape(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	outside := filepath.Join(root, "outside")
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(outside, "v.safetensors"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(outside, "data_batch_1.bin"), make([]byte, 3073), 0o644)
	os.WriteFile(filepath.Join(outside, "x.png"), pngClaiming(t, 2, 2), 0o644)
	for _, tc := range []struct{ name, stage, ckpt string }{
		{"vqvae dotdot", "vqvae-train", "../../../../outside/v.safetensors"},
		{"vqvae etc/passwd", "vqvae-train", "../../../../../../../../../../etc/passwd"},
		{"vqvae absolute", "vqvae-train", filepath.Join(outside, "v.safetensors")},
		{"train dotdot", "train", "../../outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(root, "r", tc.stage, "0123456789ab")
			m := &Manifest{Stage: tc.stage, Key: "0123456789ab", Dir: dir,
				Meta: map[string]any{"checkpoint": tc.ckpt, "model": map[string]any{"K": 16, "Factor": 4}}}
			var err error
			if tc.stage == "vqvae-train" {
				_, _, err = ReadVQVAE(m)
			} else {
				_, err = ReadTrainOutput(m)
			}
			firstLineHas(t, err, filepath.Join(dir, ManifestName), "meta.checkpoint", tc.ckpt)
			if !errors.Is(err, storage.ErrOutside) {
				t.Errorf("error does not wrap storage.ErrOutside: %v", err)
			}
		})
	}
	// The download unit list: a member leading out of the unit's folder.
	src := filepath.Join(root, "src")
	os.MkdirAll(src, 0o755)
	for _, u := range []datasets.Unit{
		{Format: datasets.FormatCIFAR10, Split: "train", Path: src, Members: []string{"../outside/data_batch_1.bin"}, Count: 1, Classes: make([]string, 10)},
		{Format: datasets.FormatFolderGCS, Split: "train", Path: src, Members: []string{"../outside/x.png"}, Count: 1, Classes: []string{"a"}},
	} {
		t.Run("unit "+u.Format, func(t *testing.T) {
			err := datasets.ReadUnit(ctx, u, func(datasets.Item) error { return nil })
			firstLineHas(t, err, u.Members[0], "unit list")
			if !errors.Is(err, storage.ErrOutside) {
				t.Errorf("error does not wrap storage.ErrOutside: %v", err)
			}
		})
	}
}

// tinyVQTrainer is a vqvae-train trainer over 4 random 4×4 images in a
// fresh run folder (the Run's setup without the download stage).
func tinyVQTrainer(t *testing.T, dir string) *vqTrainer {
	t.Helper()
	cfg, err := ParseConfig([]byte("dataset: {name: cifar10}\nvqvae: {hidden: 4, res_hidden: 2, res_blocks: 1, codes: 4, code_dim: 2, factor: 2, batch: 2, steps: 4, threads: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	vc := cfg.VQVAE
	m, err := vqvae.New(vc.Model(), vc.Seed)
	if err != nil {
		t.Fatal(err)
	}
	set := &imageSet{n: 4, h: 4, w: 4, x: make([]float32, 4*4*4*3)}
	return &vqTrainer{rc: &RunContext{Config: cfg, Key: "0123456789ab", Dir: dir, Log: slog.New(slog.DiscardHandler)},
		vc: vc, m: m, opt: vqvae.NewAdam(m, float32(vc.LR), 0.9, 0.999, 1e-8), train: set, eval: set, batch: make([]float32, 2*4*4*3)}
}

// TestReliability29_2_LatestEscape: a checkpoints/LATEST naming a folder
// outside the stage folder (another run's real checkpoint) is refused by
// model.CheckpointStore.Latest through storage.Within, for train,
// vqvae-train and finetune resumes and train.init_from, naming LATEST.
func TestReliability29_2_LatestEscape(t *testing.T) {
	ctx := context.Background()
	// escape points dir's LATEST at other's newest checkpoint, relatively
	// or absolutely.
	escape := func(t *testing.T, dir, other string, abs bool) string {
		target := filepath.Join(other, CheckpointDir, ckptName(1))
		rel, err := filepath.Rel(filepath.Join(dir, CheckpointDir), target)
		if err != nil {
			t.Fatal(err)
		}
		if abs {
			rel = target
		}
		latest := filepath.Join(dir, CheckpointDir, LatestFile)
		os.MkdirAll(filepath.Dir(latest), 0o755)
		if err := os.WriteFile(latest, []byte(rel+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return latest
	}
	for _, abs := range []bool{false, true} {
		name := map[bool]string{false: "relative", true: "absolute"}[abs]
		t.Run("train "+name, func(t *testing.T) {
			qm, rc := checkpointedTrainer(t)
			var err error
			rc2 := tinyTrainContext(t)
			latest := escape(t, rc2.Dir, rc.Dir, abs)
			_, err = newTrainer(ctx, rc2, qm)
			firstLineHas(t, err, latest, "is not a path inside")
			// train.init_from naming a train folder whose LATEST escapes.
			rc3 := tinyTrainContext(t)
			rc3.Config.Train.InitFrom = rc2.Dir
			_, err = newTrainer(ctx, rc3, qm)
			firstLineHas(t, err, "train.init_from", latest, "is not a path inside")
		})
		t.Run("vqvae-train "+name, func(t *testing.T) {
			tr := tinyVQTrainer(t, t.TempDir())
			tr.st.Step, tr.opt.Step = 1, 1
			if err := tr.checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			tr2 := tinyVQTrainer(t, t.TempDir())
			latest := escape(t, tr2.rc.Dir, tr.rc.Dir, abs)
			err := tr2.resume(ctx)
			firstLineHas(t, err, latest, "is not a path inside")
		})
	}
	t.Run("finetune", func(t *testing.T) {
		ft := &finetuner{rc: &RunContext{Dir: t.TempDir()}, fc: FinetuneParams{KeepCheckpoints: 1}}
		latest := escape(t, ft.rc.Dir, t.TempDir(), false)
		_, err := ft.store().Latest(ctx)
		firstLineHas(t, err, latest, "is not a path inside")
	})
}

// tinyFinetuner is a finetuner of a model of cfg with a 3-class head in
// run folder dir, before any step (what newFinetuner builds, without data).
func tinyFinetuner(t *testing.T, dir string, cfg model.Config) *finetuner {
	t.Helper()
	m, err := model.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Params.Init(1)
	opt, err := model.NewOptimizer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ft := &finetuner{rc: &RunContext{Dir: dir, Log: slog.New(slog.DiscardHandler)}, fc: FinetuneParams{Steps: 10, KeepCheckpoints: 1},
		m: m, opt: opt, head: model.NewClassHead(cfg.D, 3, 1), rng: rand.NewPCG(1, 2), started: time.Now(), best: -1}
	for _, p := range ft.head.Params() {
		ft.hm = append(ft.hm, make([]float32, len(p)), make([]float32, len(p)))
	}
	if ft.rngState, err = ft.rng.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	return ft
}

// editState rewrites key of the state.json in checkpoint folder dir.
func editState(t *testing.T, dir, key, value string) string {
	t.Helper()
	p := filepath.Join(dir, StateFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	st[key] = json.RawMessage(value)
	b, _ = json.Marshal(st)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReliability29_10_ResumeStateChecked: a checkpoint whose state.json
// numbers do not fit the run (vqvae-train index 1000000 or −1, a step of
// −50 or past the config's steps) or whose weights are of another model
// is refused by checkResume, naming the file and key, for vqvae-train,
// finetune and train: no index panic, no negative learning rate, no
// partial copy of the weights.
func TestReliability29_10_ResumeStateChecked(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ key, value, want string }{
		{"index", "1000000", "index = 1000000 is outside 0..4"},
		{"index", "-1", "index = -1 is outside"},
		{"step", "-50", "step = -50 is outside"},
		{"step", "99", "step = 99 is outside 0..4"},
		{"epoch", "-1", "epoch = -1 is outside"},
	} {
		t.Run("vqvae-train "+tc.key+"="+tc.value, func(t *testing.T) {
			dir := t.TempDir()
			tr := tinyVQTrainer(t, dir)
			tr.st.Step, tr.opt.Step = 1, 1
			if err := tr.checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			state := editState(t, filepath.Join(dir, CheckpointDir, ckptName(1)), tc.key, tc.value)
			err := tinyVQTrainer(t, dir).resume(ctx)
			firstLineHas(t, err, "vqvae-train: "+state, tc.want)
		})
	}
	cfg := model.Config{Layers: 1, D: 8, Heads: 1, Seq: 4, Vocab: 16}
	for _, tc := range []struct{ name, key, value, want string }{
		{"step -50", "step", "-50", "step = -50 is outside 0..10"},
		{"step past steps", "step", "11", "step = 11 is outside 0..10"},
		{"evals since best", "evals_since_best", "-3", "evals_since_best = -3 is outside"},
		{"weights of another model", "", "", "holds model"},
	} {
		t.Run("finetune "+tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ft := tinyFinetuner(t, dir, cfg)
			ft.step, ft.opt.Step = 1, 1
			if err := ft.checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			ckpt := filepath.Join(dir, CheckpointDir, ckptName(1))
			want := []string{"finetune: ", tc.want}
			if tc.key != "" {
				want = append(want, editState(t, ckpt, tc.key, tc.value))
			} else {
				// A model.safetensors of a wider model over the checkpoint's.
				other := tinyFinetuner(t, t.TempDir(), model.Config{Layers: 1, D: 16, Heads: 1, Seq: 4, Vocab: 16})
				other.step, other.opt.Step = 1, 1
				if err := other.checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(filepath.Join(other.rc.Dir, CheckpointDir, ckptName(1), WeightsFile))
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(ckpt, WeightsFile), b, 0o644)
				want = append(want, ckpt, "holds model L1 d16")
			}
			_, err := tinyFinetuner(t, dir, cfg).resume(ctx, ckpt)
			firstLineHas(t, err, want...)
		})
	}
	t.Run("train step -50", func(t *testing.T) {
		qm, rc := checkpointedTrainer(t)
		var err error
		state := editState(t, filepath.Join(rc.Dir, CheckpointDir, ckptName(1)), "step", "-50")
		_, err = newTrainer(ctx, rc, qm)
		firstLineHas(t, err, "train: "+state, "step = -50 is outside 0..2")
	})
}
