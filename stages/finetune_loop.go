package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/loader"
	"github.com/igpt/igpt/internal/progress"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

// finetuneAfterStep, when set (by tests), is called after each step.
var finetuneAfterStep func(step int)

// HeadFile holds a finetune checkpoint's classification head and its Adam
// moments.
const HeadFile = "head.safetensors"

// FinetuneMetric is one line of the finetune stage's metrics.jsonl: the
// means over the steps since the previous line, and the val accuracy.
type FinetuneMetric struct {
	Step     int     `json:"step"`
	Epoch    int     `json:"epoch"`
	GenLoss  float64 `json:"gen_loss"` // nats per counted token
	ClsLoss  float64 `json:"cls_loss"` // nats per image
	TrainAcc float64 `json:"train_acc"`
	ValAcc   float64 `json:"val_acc"`
	ValLoss  float64 `json:"val_cls_loss"`
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	ElapsedS float64 `json:"elapsed_s"` // wall time across resumes
}

// FinetuneState is a finetune checkpoint's state.json.
type FinetuneState struct {
	Step      int             `json:"step"`
	Model     model.Config    `json:"model"`
	Position  loader.Position `json:"data_position"`
	RNG       []byte          `json:"rng"`
	ElapsedS  float64         `json:"elapsed_s"`
	SinceBest int             `json:"evals_since_best"`
	Stopped   string          `json:"stopped,omitempty"`
	Threads   int             `json:"threads"`
}

// labelled is a fixed evaluation set: tokens [N,T] and labels [N].
type labelled struct {
	tok    []int32
	labels []int32
}

type finetuner struct {
	rc    *RunContext
	fc    FinetuneParams
	m     *model.Model
	head  *model.ClassHead
	opt   *model.Optimizer
	hm    [][]float32 // the head's Adam moments: m.W, m.Bias, v.W, v.Bias
	obj   model.Objective
	bertP float64
	data  *loader.Loader
	rng   *rand.PCG
	h, w  int
	pad   int

	tok, labels []int32
	mask        []bool
	dx          []float32
	scratch     []int32
	val         labelled
	testFiles   []string

	step      int
	pos       loader.Position
	rngState  []byte
	elapsed   float64 // seconds before this process's start
	started   time.Time
	sinceBest int
	best      float64 // best val accuracy (-1: none yet)
	bestStep  int
	stopped   string
	lastGood  int
	metrics   []FinetuneMetric
	window    FinetuneMetric // sums since the last metrics line
	winSteps  int
	winImages int
}

// newFinetuner loads the starting weights, the data and any checkpoint.
func newFinetuner(ctx context.Context, rc *RunContext) (*finetuner, error) {
	fc := rc.Config.Finetune
	qm := rc.Inputs[rc.Config.TokensStage()]
	in, err := readTrainInputs(ctx, qm)
	if err != nil {
		return nil, fmt.Errorf("finetune: %w", err)
	}
	if len(qm.Split("val")) == 0 || len(qm.Split("test")) == 0 {
		return nil, fmt.Errorf("finetune: %s output %s needs a val split (early stopping) and a test split (the score); set %s.val_fraction above 0",
			qm.Stage, qm.Dir, sectionOf(qm.Stage))
	}
	tout, err := ReadTokensOutput(qm)
	if err != nil {
		return nil, fmt.Errorf("finetune: %w", err)
	}
	ft := &finetuner{rc: rc, fc: fc, h: in.h, w: in.w, best: -1, rng: rand.NewPCG(fc.Seed, 0xf1e7), started: time.Now()}
	if err := ft.initModel(ctx, in, len(tout.Classes)); err != nil {
		return nil, err
	}
	ft.pad = max(0, in.w/8)
	if fc.Pad != nil {
		ft.pad = *fc.Pad
	}
	if ft.pad >= min(in.h, in.w) {
		return nil, fmt.Errorf("finetune.pad %d: a reflection pad must be smaller than the %dx%d token grid", ft.pad, in.h, in.w)
	}
	for _, f := range qm.Split("test") {
		ft.testFiles = append(ft.testFiles, qm.Path(f.Name))
	}
	var valFiles []string
	for _, f := range qm.Split("val") {
		valFiles = append(valFiles, qm.Path(f.Name))
	}
	if ft.val, err = readLabelled(ctx, "finetune: val", valFiles, fc.EvalRecords, ft.m.Config, ft.head.Classes); err != nil {
		return nil, err
	}
	if err := ft.start(ctx, in); err != nil {
		return nil, err
	}
	kernels.LogDispatch(rc.Log)
	rc.Log.Info("finetune: model", "config", ft.m.Config.String(), "init", fc.Init, "objective", ft.obj, "precision", ft.m.Precision, "classes", ft.head.Classes,
		"gen_weight", *fc.GenWeight, "pad", ft.pad, "hflip", *fc.HFlip, "val_records", len(ft.val.labels), "resumed_at", ft.step)
	return ft, nil
}

// sectionOf is the config section of a tokens stage.
func sectionOf(stage string) string {
	if stage == "vqvae-encode" {
		return "vqvae_encode"
	}
	return stage
}

// initModel builds the model from the train stage's weights or at random,
// its optimiser and the head.
func (ft *finetuner) initModel(ctx context.Context, in trainInputs, classes int) error {
	fc, cfg := ft.fc, ft.rc.Config
	if classes < 2 {
		return fmt.Errorf("finetune: the %s output names %d classes; fine-tuning needs a labelled dataset with at least 2", cfg.TokensStage(), classes)
	}
	objective := cfg.Train.Objective
	if fc.Init == FinetuneRandom {
		mc, err := ModelConfig(cfg.Train, in.h*in.w, in.vocab)
		if err != nil {
			return err
		}
		if err := checkFinetuneMemory(mc, fc); err != nil {
			return err
		}
		ft.m, _ = model.New(mc)
		ft.m.Params.Init(fc.Seed)
	} else {
		p, tout, err := LoadTrained(ctx, ft.rc.Inputs["train"])
		if err != nil {
			return fmt.Errorf("finetune: %w", err)
		}
		if p.Config.Seq != in.h*in.w || p.Config.Vocab != in.vocab {
			return fmt.Errorf("finetune: the train stage's model reads %d tokens of vocabulary %d, the %s output has %dx%d tokens of vocabulary %d",
				p.Config.Seq, p.Config.Vocab, cfg.TokensStage(), in.h, in.w, in.vocab)
		}
		if err := checkFinetuneMemory(p.Config, fc); err != nil {
			return err
		}
		ft.m, objective = model.FromParams(p), tout.Objective
	}
	ft.m.Precision = fc.Prec()
	obj, err := model.ParseObjective(objective)
	if err != nil {
		return err
	}
	ft.obj, ft.bertP = obj, cfg.Train.BERTMaskProb
	if ft.opt, err = model.NewOptimizer(ft.m.Config); err != nil {
		return err
	}
	ft.opt.WeightDecay = float32(fc.WeightDecay) // clipping is joint with the head's, in update
	ft.head = model.NewClassHead(ft.m.Config.D, classes, fc.Seed)
	for _, p := range ft.head.Params() {
		ft.hm = append(ft.hm, make([]float32, len(p)), make([]float32, len(p)))
	}
	B, T := fc.Batch, ft.m.Config.Seq
	ft.tok, ft.labels, ft.dx, ft.scratch = make([]int32, B*T), make([]int32, B), make([]float32, B*T*ft.m.Config.D), make([]int32, T)
	if obj == model.BERT {
		ft.mask = make([]bool, B*T)
	}
	return nil
}

// readLabelled reads up to limit (0: all) records of files as an
// evaluation set, checking their shape against mc and, when classes > 0,
// their labels; what prefixes errors.
func readLabelled(ctx context.Context, what string, files []string, limit int, mc model.Config, classes int) (labelled, error) {
	var out labelled
	recs, err := loader.ReadAll(ctx, files, limit)
	if err != nil {
		return out, fmt.Errorf("%s: %w", what, err)
	}
	for _, r := range recs {
		if len(r.Tok) != mc.Seq || r.Vocab != mc.Vocab {
			return out, fmt.Errorf("%s record %s has %d tokens of vocabulary %d, the model reads %d of %d", what, r.Key, len(r.Tok), r.Vocab, mc.Seq, mc.Vocab)
		}
		if classes > 0 && (r.Label < 0 || r.Label >= classes) {
			return out, fmt.Errorf("%s record %s has label %d, outside the dataset's %d classes", what, r.Key, r.Label, classes)
		}
		for _, v := range r.Tok {
			out.tok = append(out.tok, int32(v))
		}
		out.labels = append(out.labels, int32(r.Label))
	}
	return out, nil
}

// start resumes from the newest checkpoint, if any, and opens the loader.
func (ft *finetuner) start(ctx context.Context, in trainInputs) error {
	pos := loader.Position{}
	dir, err := ft.store().Latest(ctx)
	if err != nil {
		return err
	}
	if dir != "" {
		if pos, err = ft.resume(ctx, dir); err != nil {
			return err
		}
	}
	if err := ft.m.Reserve(ft.fc.Batch, ft.m.Config.Seq); err != nil {
		return err
	}
	ft.m.AllocGrads()
	ft.data, err = loader.New(in.trainFiles, loader.Options{Seed: ft.fc.Seed, Buffer: ft.fc.ShuffleBuffer, Vocab: in.vocab}, pos)
	if err != nil {
		return fmt.Errorf("finetune: %w; delete %s to start over", err, ft.rc.Dir)
	}
	return ft.markStep()
}

func (ft *finetuner) store() model.CheckpointStore {
	return checkpointStore(ft.rc.Dir, ft.fc.KeepCheckpoints)
}

// markStep records the data position and generator state after a
// completed step.
func (ft *finetuner) markStep() error {
	ft.pos = ft.data.Position()
	st, err := ft.rng.MarshalBinary()
	ft.rngState = st
	return err
}

// lr is the rate of step (1-based): linear warm-up, then constant.
func (ft *finetuner) lr(step int) float64 {
	return ft.fc.LR * min(1, float64(step)/float64(max(1, ft.fc.WarmupSteps)))
}

func (ft *finetuner) elapsedS() float64 { return ft.elapsed + time.Since(ft.started).Seconds() }

func (ft *finetuner) loop(ctx context.Context) error {
	fc := ft.fc
	bar := progress.Start("finetune: steps", int64(ft.step), int64(fc.Steps), ft.rc.Log)
	defer bar.Finish()
	rng := rand.New(ft.rng)
	for ft.stopped == "" {
		if err := ft.trainStep(ctx, rng); err != nil {
			if ctx.Err() != nil {
				if serr := ft.checkpoint(context.WithoutCancel(ctx)); serr != nil {
					return errors.Join(err, serr)
				}
				return fmt.Errorf("finetune: interrupted after step %d; checkpoint saved in %s: rerun the same command to resume: %w", ft.step, ft.rc.Dir, ctx.Err())
			}
			return err
		}
		bar.Set(int64(ft.step))
		if finetuneAfterStep != nil {
			finetuneAfterStep(ft.step)
		}
		timeUp := fc.MaxMinutes > 0 && ft.elapsedS() >= fc.MaxMinutes*60
		if ft.step%fc.EvalEvery == 0 || ft.step == fc.Steps || timeUp {
			if err := ft.evaluate(ctx); err != nil {
				return err
			}
		}
		switch {
		case ft.step >= fc.Steps:
			ft.stopped = "steps"
		case timeUp:
			ft.stopped = "time"
		case fc.Patience > 0 && ft.sinceBest >= fc.Patience:
			ft.stopped = "patience"
		}
		if ft.step%fc.CheckpointEvery == 0 || ft.stopped != "" {
			if err := ft.checkpoint(ctx); err != nil {
				return err
			}
		}
	}
	ft.rc.Log.Info("finetune: stopped", "reason", ft.stopped, "step", ft.step, "best_step", ft.bestStep, "best_val_acc", ft.best)
	return nil
}

// trainStep runs one optimiser step of the joint loss on an augmented
// batch.
func (ft *finetuner) trainStep(ctx context.Context, rng *rand.Rand) error {
	fc, T := ft.fc, ft.m.Config.Seq
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ft.data.Batch(ctx, ft.tok, ft.labels, fc.Batch, T); err != nil {
		return err
	}
	augment(ft.tok, fc.Batch, ft.h, ft.w, ft.pad, *fc.HFlip, rng, ft.scratch)
	if ft.mask != nil {
		model.FillBERTMask(ft.mask, rng, ft.bertP)
	}
	ft.m.ZeroGrads()
	ft.head.ZeroGrads()
	gen, err := ft.m.Forward(ft.tok, ft.mask, ft.obj)
	if err != nil {
		return err
	}
	cls, correct, err := ft.head.Forward(ft.m.FinalNormed(), ft.labels, fc.Batch, T)
	if err != nil {
		return err
	}
	if l := *fc.GenWeight*gen + cls; math.IsNaN(l) || math.IsInf(l, 0) {
		return ft.diverged("loss", l)
	}
	ft.head.Backward(ft.dx, 1, T)
	if err := ft.m.BackwardWith(float32(*fc.GenWeight), ft.dx); err != nil {
		return err
	}
	gn, err := ft.update()
	if err != nil {
		return err
	}
	ft.step++
	ft.window.GenLoss += gen
	ft.window.ClsLoss += cls
	ft.window.GradNorm += gn
	ft.window.TrainAcc += float64(correct)
	ft.winSteps++
	ft.winImages += fc.Batch
	return ft.markStep()
}

// update clips the model's and head's gradients together and takes an Adam
// step on both.
func (ft *finetuner) update() (float64, error) {
	grads := append([][]float32{ft.m.Grads.Data}, ft.head.Grads()...)
	gn := kernels.GradNormClip(grads, ft.fc.Clip)
	if math.IsNaN(gn) || math.IsInf(gn, 0) {
		return gn, ft.diverged("gradient norm", gn)
	}
	lr := ft.lr(ft.step + 1)
	if err := ft.opt.Apply(ft.m.Params, ft.m.Grads, lr); err != nil {
		return gn, err
	}
	o := ft.opt
	for i, p := range ft.head.Params() {
		wd := float32(0)
		if i == 0 {
			wd = o.WeightDecay
		}
		kernels.AdamW(p, ft.head.Grads()[i], ft.hm[2*i], ft.hm[2*i+1], o.Step, float32(lr), o.Beta1, o.Beta2, o.Eps, wd)
	}
	return gn, nil
}

func (ft *finetuner) diverged(what string, v float64) error {
	where := "no checkpoint was written yet"
	if ft.lastGood > 0 {
		where = fmt.Sprintf("the last good checkpoint (step %d) is kept in %s", ft.lastGood, storage.Join(ft.rc.Dir, CheckpointDir))
	}
	return fmt.Errorf("finetune: %s is %v at step %d (lr %.3g); %s; lower finetune.lr, then rerun to resume from it", what, v, ft.step+1, ft.lr(ft.step+1), where)
}

// accuracy scores the model and head on an evaluation set: accuracy and
// mean classification loss.
func (ft *finetuner) accuracy(m *model.Model, head *model.ClassHead, set labelled) (acc, loss float64, err error) {
	T, C, K := m.Config.Seq, m.Config.D, head.Classes
	const chunk = 256
	pooled, logits := make([]float32, chunk*C), make([]float32, chunk*K)
	var mask []bool
	correct := 0
	for b0 := 0; b0 < len(set.labels); b0 += chunk {
		b := min(chunk, len(set.labels)-b0)
		tok := set.tok[b0*T : (b0+b)*T]
		if ft.obj == model.BERT {
			mask = make([]bool, len(tok)) // no mask at evaluation, as the probe
		}
		if _, _, err := m.PooledFinal(tok, mask, ft.obj, pooled[:b*C]); err != nil {
			return 0, 0, err
		}
		head.Logits(logits[:b*K], pooled[:b*C], b)
		l, _ := kernels.SoftmaxCrossEntropy(nil, logits[:b*K], set.labels[b0:b0+b], K)
		loss += l * float64(b)
		for i := range b {
			if model.Argmax(logits[i*K:(i+1)*K]) == int(set.labels[b0+i]) {
				correct++
			}
		}
	}
	n := float64(len(set.labels))
	return float64(correct) / n, loss / n, nil
}

// evaluate measures the val accuracy, closes the metrics window and keeps
// the weights when they are the best so far.
func (ft *finetuner) evaluate(ctx context.Context) error {
	acc, loss, err := ft.accuracy(ft.m, ft.head, ft.val)
	if err != nil {
		return err
	}
	w, n := float64(max(1, ft.winSteps)), float64(max(1, ft.winImages))
	met := FinetuneMetric{Step: ft.step, Epoch: ft.data.Epoch(), GenLoss: ft.window.GenLoss / w, ClsLoss: ft.window.ClsLoss / w,
		TrainAcc: ft.window.TrainAcc / n, ValAcc: acc, ValLoss: loss, LR: ft.lr(ft.step), GradNorm: ft.window.GradNorm / w, ElapsedS: ft.elapsedS()}
	ft.metrics = append(ft.metrics, met)
	ft.window, ft.winSteps, ft.winImages = FinetuneMetric{}, 0, 0
	ft.rc.Log.Info("finetune", "step", met.Step, "gen_loss", met.GenLoss, "cls_loss", met.ClsLoss, "train_acc", met.TrainAcc, "val_acc", acc)
	if acc <= ft.best {
		ft.sinceBest++
		return nil
	}
	ft.best, ft.bestStep, ft.sinceBest = acc, ft.step, 0
	var buf bytes.Buffer
	meta := map[string]string{"step": strconv.Itoa(ft.step), "val_acc": strconv.FormatFloat(acc, 'g', -1, 64), "init": ft.fc.Init, "objective": ft.obj.String()}
	if err := model.SaveClassifier(&buf, ft.m.Params, ft.head, meta); err != nil {
		return err
	}
	return storage.WriteFile(ctx, storage.Join(ft.rc.Dir, BestFile), buf.Bytes())
}

// test scores the best weights on the whole test split.
func (ft *finetuner) test(ctx context.Context) (FinetuneOutput, error) {
	out := FinetuneOutput{Init: ft.fc.Init, Steps: ft.step, Stopped: ft.stopped, Minutes: ft.elapsedS() / 60}
	p, head, meta, err := ft.loadBest(ctx)
	if err != nil {
		return out, err
	}
	test, err := readLabelled(ctx, "finetune: test", ft.testFiles, 0, p.Config, head.Classes)
	if err != nil {
		return out, err
	}
	acc, _, err := ft.accuracy(model.FromParams(p), head, test)
	if err != nil {
		return out, err
	}
	out.TestAcc = acc
	out.ValAcc, _ = strconv.ParseFloat(meta["val_acc"], 64)
	out.BestStep, _ = strconv.Atoi(meta["step"])
	ft.rc.Log.Info("finetune: test", "accuracy", acc, "best_step", out.BestStep, "val_acc", out.ValAcc, "test_records", len(test.labels))
	return out, nil
}

// loadBest reads best.safetensors.
func (ft *finetuner) loadBest(ctx context.Context) (*model.Params, *model.ClassHead, map[string]string, error) {
	path := storage.Join(ft.rc.Dir, BestFile)
	b, err := storage.ReadFile(ctx, path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("finetune: the best weights: %w", err)
	}
	p, head, meta, err := model.LoadClassifier(bytes.NewReader(b))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("finetune: %s: %w; delete %s to start over", path, err, ft.rc.Dir)
	}
	return p, head, meta, nil
}

// checkpoint saves weights, head, both optimisers' moments and the state.
func (ft *finetuner) checkpoint(ctx context.Context) error {
	if ft.step == ft.lastGood && ft.stopped == "" {
		return nil
	}
	var w, o, h bytes.Buffer
	if err := model.SaveCheckpoint(&w, ft.m.Params, map[string]string{"step": strconv.Itoa(ft.step)}); err != nil {
		return err
	}
	if err := ft.opt.SaveState(&o); err != nil {
		return err
	}
	ts := ft.head.Tensors("")
	for i, t := range ft.head.Tensors("") {
		ts = append(ts, model.WTensor{Name: "m." + t.Name, Shape: t.Shape, F32: ft.hm[2*i]}, model.WTensor{Name: "v." + t.Name, Shape: t.Shape, F32: ft.hm[2*i+1]})
	}
	if err := model.WriteSafetensors(&h, ts, nil); err != nil {
		return err
	}
	st := FinetuneState{Step: ft.step, Model: ft.m.Config, Position: ft.pos, RNG: ft.rngState, ElapsedS: ft.elapsedS(),
		SinceBest: ft.sinceBest, Stopped: ft.stopped, Threads: kernels.Threads()}
	sb, _ := json.MarshalIndent(st, "", "  ")
	files := []model.CheckpointFile{{Name: WeightsFile, Data: w.Bytes()}, {Name: OptimFile, Data: o.Bytes()}, {Name: HeadFile, Data: h.Bytes()}, {Name: StateFile, Data: sb}}
	if err := ft.store().Save(ctx, ft.step, files, func() error { return ft.writeProgress(ctx) }); err != nil {
		return err
	}
	ft.lastGood = ft.step
	return nil
}

// writeProgress writes metrics.jsonl and redraws finetune.png, so that a
// long run's curve can be watched, and an interrupted one's read, before
// the stage ends.
func (ft *finetuner) writeProgress(ctx context.Context) error {
	if err := writeMetricLines(ctx, ft.rc.Dir, ft.metrics); err != nil {
		return err
	}
	if len(ft.metrics) == 0 {
		return nil
	}
	png, err := finetunePlot(ft.metrics)
	if err != nil {
		return err
	}
	return storage.WriteFile(ctx, storage.Join(ft.rc.Dir, FinetunePlotFile), png)
}

// resume loads checkpoint dir and returns its data position. The best
// weights' file, written before any checkpoint that follows it, is the
// record of the best val accuracy.
func (ft *finetuner) resume(ctx context.Context, dir string) (loader.Position, error) {
	var st FinetuneState
	b, err := storage.ReadFile(ctx, storage.Join(dir, StateFile))
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		return st.Position, fmt.Errorf("finetune: checkpoint %s: %w; delete %s to start over", dir, err, ft.rc.Dir)
	}
	if err := checkResume("finetune", dir, ft.rc.Dir, ft.m.Config, st.Model, resumeBound{"step", st.Step, 0, ft.fc.Steps},
		resumeBound{"evals_since_best", st.SinceBest, 0, ft.fc.Steps}); err != nil {
		return st.Position, err
	}
	if err := ft.loadCheckpointFiles(ctx, dir); err != nil {
		return st.Position, err
	}
	if ft.opt.Step != st.Step {
		return st.Position, fmt.Errorf("finetune: checkpoint %s: optimizer is at step %d, state at %d; delete %s to start over", dir, ft.opt.Step, st.Step, ft.rc.Dir)
	}
	if err := ft.rng.UnmarshalBinary(st.RNG); err != nil {
		return st.Position, fmt.Errorf("finetune: %s: rng state: %w", storage.Join(dir, StateFile), err)
	}
	ft.step, ft.lastGood, ft.elapsed, ft.sinceBest, ft.stopped = st.Step, st.Step, st.ElapsedS, st.SinceBest, st.Stopped
	if _, _, meta, err := ft.loadBest(ctx); err == nil {
		ft.best, _ = strconv.ParseFloat(meta["val_acc"], 64)
		ft.bestStep, _ = strconv.Atoi(meta["step"])
	}
	ft.metrics, err = readMetricLines(ctx, ft.rc.Dir, func(m FinetuneMetric) bool { return m.Step <= st.Step })
	ft.rc.Log.Info("finetune: resuming", "step", st.Step, "checkpoint", dir, "best_val_acc", ft.best)
	return st.Position, err
}

// loadCheckpointFiles reads a checkpoint's weights, moments and head.
func (ft *finetuner) loadCheckpointFiles(ctx context.Context, dir string) error {
	read := func(name string) ([]byte, error) { return storage.ReadFile(ctx, storage.Join(dir, name)) }
	w, err := read(WeightsFile)
	if err != nil {
		return err
	}
	p, _, err := model.LoadCheckpoint(bytes.NewReader(w))
	if err != nil {
		return fmt.Errorf("finetune: %s: %w", storage.Join(dir, WeightsFile), err)
	}
	if err := checkResume("finetune", dir, ft.rc.Dir, ft.m.Config, p.Config); err != nil {
		return err
	}
	copy(ft.m.Params.Data, p.Data)
	o, err := read(OptimFile)
	if err != nil {
		return err
	}
	if err := ft.opt.LoadState(bytes.NewReader(o)); err != nil {
		return fmt.Errorf("finetune: %s: %w", storage.Join(dir, OptimFile), err)
	}
	h, err := read(HeadFile)
	if err != nil {
		return err
	}
	st, err := model.ParseSafetensors(h)
	if err != nil {
		return fmt.Errorf("finetune: %s: %w", storage.Join(dir, HeadFile), err)
	}
	for i, t := range ft.head.Tensors("") {
		for j, dst := range [][]float32{t.F32, ft.hm[2*i], ft.hm[2*i+1]} {
			name := []string{"", "m.", "v."}[j] + t.Name
			s, ok := st.Tensors[name]
			if !ok || s.Len() != len(dst) {
				return fmt.Errorf("finetune: %s: tensor %s missing or not %d values; delete %s to start over", storage.Join(dir, HeadFile), name, len(dst), ft.rc.Dir)
			}
			if _, err := s.Float32s(dst); err != nil {
				return fmt.Errorf("finetune: %s: %s: %w", storage.Join(dir, HeadFile), name, err)
			}
		}
	}
	return nil
}

// augment applies the paper's CIFAR augmentation to each of the B token
// grids [h,w] in tok: reflection pad by pad tokens, a random h×w crop,
// and a horizontal flip with probability flip. Draws are made whether or
// not they change anything, so the generator's state depends only on B.
// scratch holds h·w tokens.
func augment(tok []int32, B, h, w, pad int, flip float64, rng *rand.Rand, scratch []int32) {
	T := h * w
	for b := range B {
		dy, dx := 0, 0
		if pad > 0 {
			dy, dx = rng.IntN(2*pad+1)-pad, rng.IntN(2*pad+1)-pad
		}
		f := flip > 0 && rng.Float64() < flip
		if dy == 0 && dx == 0 && !f {
			continue
		}
		seq := tok[b*T : (b+1)*T]
		copy(scratch, seq)
		shiftFlip(seq, scratch, h, w, dy, dx, f)
	}
}

// shiftFlip writes into dst [h,w] the crop at offset (pad+dy, pad+dx) of
// src reflection-padded (numpy's "reflect": the edge is not repeated),
// mirrored left to right if flip:
//
//	dst[y][x] = src[r(y+dy)][r(x'+dx)],  x' = w−1−x if flip else x
func shiftFlip(dst, src []int32, h, w, dy, dx int, flip bool) {
	for y := range h {
		sy := reflectIndex(y+dy, h)
		for x := range w {
			xx := x
			if flip {
				xx = w - 1 - x
			}
			dst[y*w+x] = src[sy*w+reflectIndex(xx+dx, w)]
		}
	}
}

// reflectIndex maps i in (−n, 2n−1) into [0, n) by reflection about the
// edge pixels.
func reflectIndex(i, n int) int {
	if i < 0 {
		return -i
	}
	if i >= n {
		return 2*(n-1) - i
	}
	return i
}
