package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/loader"
	"github.com/igpt/igpt/internal/progress"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

type trainer struct {
	rc      *RunContext
	tc      TrainParams
	m       *model.Model
	opt     *model.Optimizer
	sched   model.Schedule
	obj     model.Objective
	data    *loader.Loader
	rng     *rand.PCG
	mask    []bool
	tok     []int32
	val     []int32 // fixed validation tokens [N, T]
	valMask []bool
	metrics []Metric
	// elapsedBefore is the wall time, in seconds, of the runs this one
	// resumed.
	elapsedBefore float64
	pos           loader.Position // data position after the last completed step
	rngState      []byte          // mask generator state after the last completed step
	step          int
	tokens        int64
	lastGood      int     // step of the newest checkpoint
	gridW         int     // token grid width, for horizontal flips
	scratch       []int32 // one sequence, for the flips
	initSHA       string  // sha256 of the train.init_from weights, if any

	resumedFrom string // checkpoint folder resumed from
}

// newTrainer builds the model, optimiser and data loader for the
// quantize output qm, resuming from this run's newest checkpoint, starting
// from train.init_from's weights, or initialising at random.
func newTrainer(ctx context.Context, rc *RunContext, qm *Manifest) (*trainer, error) {
	tc := rc.Config.Train
	in, err := readTrainInputs(ctx, qm)
	if err != nil {
		return nil, err
	}
	mc, err := ModelConfig(tc, in.h*in.w, in.vocab)
	if err != nil {
		return nil, err
	}
	if err := checkTrainMemory(mc, tc); err != nil {
		return nil, err
	}
	obj, err := model.ParseObjective(tc.Objective)
	if err != nil {
		return nil, err
	}
	m, err := model.New(mc)
	if err != nil {
		return nil, err
	}
	m.Precision = tc.Prec()
	opt, err := model.NewOptimizer(mc)
	if err != nil {
		return nil, err
	}
	opt.WeightDecay, opt.ClipNorm = float32(tc.WeightDecay), tc.Clip
	tr := &trainer{
		rc: rc, tc: tc, m: m, opt: opt, obj: obj,
		sched: model.Schedule{LR: tc.LR, Warmup: tc.WarmupSteps, Total: tc.Steps},
		rng:   rand.NewPCG(tc.Seed, 0xb5ad4eceda1ce2a9),
		tok:   make([]int32, tc.Batch*mc.Seq),
		gridW: in.w, scratch: make([]int32, mc.Seq),
	}
	if obj == model.BERT {
		tr.mask = make([]bool, tc.Batch*mc.Seq)
	}
	if err := tr.start(ctx, in); err != nil {
		return nil, err
	}
	kernels.LogDispatch(rc.Log)
	rc.Log.Info("train: model", "config", mc.String(), "params", mc.NumParams(), "objective", tc.Objective,
		"precision", m.Precision, "batch", tc.Batch, "accum", tc.Accum, "steps", tc.Steps, "threads", kernels.Threads(), "resumed_at", tr.step)
	return tr, nil
}

// trainInputs are the shards a training run reads and what their records
// declare.
type trainInputs struct {
	trainFiles, valFiles []string
	h, w, vocab          int
}

// readTrainInputs lists the quantize output's train shards and its val
// shards (test when there is no val), and reads the token grid from the
// first record.
func readTrainInputs(ctx context.Context, qm *Manifest) (trainInputs, error) {
	var in trainInputs
	for _, f := range qm.Split("train") {
		in.trainFiles = append(in.trainFiles, qm.Path(f.Name))
	}
	valSplit := "val"
	if len(qm.Split(valSplit)) == 0 {
		valSplit = "test"
	}
	for _, f := range qm.Split(valSplit) {
		in.valFiles = append(in.valFiles, qm.Path(f.Name))
	}
	if len(in.trainFiles) == 0 {
		return in, fmt.Errorf("train: %s output %s has no train split", qm.Stage, qm.Dir)
	}
	first, err := loader.ReadAll(ctx, in.trainFiles[:1], 1)
	if err != nil {
		return in, err
	}
	if len(first) == 0 {
		return in, fmt.Errorf("train: %s is empty", in.trainFiles[0])
	}
	// The vocabulary is the palette's, not what a record claims; every
	// record read must declare it (the loader checks).
	q, err := ReadTokensOutput(qm)
	if err != nil {
		return in, fmt.Errorf("train: %w", err)
	}
	if first[0].Vocab != q.Vocab {
		unit := "colours in its palette"
		if qm.Stage == "vqvae-encode" {
			unit = "codes in its VQ-VAE"
		}
		return in, fmt.Errorf("train: %s: record %q declares vocab %d, but the %s output has %d %s (meta.vocab of %s)",
			in.trainFiles[0], first[0].Key, first[0].Vocab, qm.Stage, q.Vocab, unit, storage.Join(qm.Dir, ManifestName))
	}
	in.h, in.w, in.vocab = first[0].H, first[0].W, q.Vocab
	return in, nil
}

// start sets the weights (resumed, init_from or random), reserves the
// training workspace, and opens the data loader at the resumed position.
func (tr *trainer) start(ctx context.Context, in trainInputs) error {
	tc, m := tr.tc, tr.m
	pos := loader.Position{}
	resumed, err := tr.resume(ctx)
	if err != nil {
		return err
	}
	switch {
	case resumed != nil:
		pos, tr.initSHA = resumed.Position, resumed.InitSHA256
	case tc.InitFrom != "":
		if err := tr.initFrom(ctx, tc.InitFrom); err != nil {
			return err
		}
	default:
		m.Params.Init(tc.Seed)
	}
	if err := m.Reserve(tc.Batch, m.Config.Seq); err != nil {
		return err
	}
	m.AllocGrads()
	if tr.data, err = loader.New(in.trainFiles, loader.Options{Seed: tc.Seed, Buffer: tc.ShuffleBuffer, Vocab: in.vocab}, pos); err != nil {
		if resumed != nil {
			return fmt.Errorf("train: %s: data_position: %w; the checkpoint does not fit the quantize output: delete %s to start over", storage.Join(tr.resumedFrom, StateFile), err, tr.rc.Dir)
		}
		return err
	}
	return tr.loadVal(ctx, in.valFiles, m.Config)
}

// loadVal reads the fixed validation set (and, for BERT, its fixed mask).
func (tr *trainer) loadVal(ctx context.Context, files []string, mc model.Config) error {
	val, err := readLabelled(ctx, "train: validation", files, tr.tc.EvalRecords, mc, 0)
	if err != nil {
		return err
	}
	tr.val = val.tok
	if tr.obj == model.BERT && len(tr.val) > 0 {
		tr.valMask = make([]bool, len(tr.val))
		model.FillBERTMask(tr.valMask, rand.New(rand.NewPCG(tr.tc.Seed, 0x5eed)), tr.tc.BERTMaskProb)
	}
	return nil
}

func (tr *trainer) loop(ctx context.Context) error {
	tc := tr.tc
	// A progress bar on a terminal; elsewhere a line with the ETA.
	bar := progress.Start("train: steps", int64(tr.step), int64(tc.Steps), tr.rc.Log)
	defer bar.Finish()
	start, startTokens := time.Now(), tr.tokens
	maskRNG := rand.New(tr.rng)
	// Wall time counts across resumes: a resumed run starts its clock
	// where the last kept metric left it.
	if n := len(tr.metrics); n > 0 {
		tr.elapsedBefore = tr.metrics[n-1].ElapsedS
	}
	if err := tr.markStep(); err != nil {
		return err
	}
	for tr.step < tc.Steps {
		err := tr.trainStep(ctx, maskRNG, start, startTokens)
		if err != nil && ctx.Err() != nil {
			// Interrupted (SIGINT/SIGTERM): save the last completed step.
			if serr := tr.checkpoint(context.WithoutCancel(ctx)); serr != nil {
				return errors.Join(err, serr)
			}
			return fmt.Errorf("train: interrupted after step %d; checkpoint saved in %s: rerun the same command to resume: %w", tr.step, tr.rc.Dir, ctx.Err())
		}
		if err != nil {
			return err
		}
		m := tr.metrics[len(tr.metrics)-1]
		bar.Set(int64(tr.step))
		if m.ValLoss != nil {
			args := []any{"step", m.Step, "loss", m.Loss, "lr", m.LR, "tokens_per_s", m.TokensPS}
			if m.ValLoss != nil {
				args = append(args, "val_loss", *m.ValLoss)
			}
			tr.rc.Log.Info("train", args...)
		}
		if tr.step%tc.CheckpointEvery == 0 || tr.step == tc.Steps {
			if err := tr.checkpoint(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// markStep records the data position and mask generator state after a
// completed step: what a checkpoint saves.
func (tr *trainer) markStep() error {
	tr.pos = tr.data.Position()
	st, err := tr.rng.MarshalBinary()
	tr.rngState = st
	return err
}

// trainStep runs one optimiser step over Accum micro-batches.
func (tr *trainer) trainStep(ctx context.Context, maskRNG *rand.Rand, start time.Time, startTokens int64) error {
	tc, T := tr.tc, tr.m.Config.Seq
	if err := ctx.Err(); err != nil {
		return err
	}
	tr.m.ZeroGrads()
	var loss float64
	for a := 0; a < tc.Accum; a++ {
		if err := tr.data.Batch(ctx, tr.tok, nil, tc.Batch, T); err != nil {
			return err
		}
		if tc.HFlip > 0 {
			// Mirror each sequence's token grid with probability hflip:
			// the fine-tuning augmentation without its crop.
			augment(tr.tok, tc.Batch, T/tr.gridW, tr.gridW, 0, tc.HFlip, maskRNG, tr.scratch)
		}
		if tr.mask != nil {
			model.FillBERTMask(tr.mask, maskRNG, tc.BERTMaskProb)
		}
		l, err := tr.m.Forward(tr.tok, tr.mask, tr.obj)
		if err != nil {
			return err
		}
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return tr.diverged("loss", l)
		}
		if err := tr.m.Backward(); err != nil {
			return err
		}
		loss += l / float64(tc.Accum)
	}
	if tc.Accum > 1 {
		scale := float32(1 / float64(tc.Accum))
		for i := range tr.m.Grads.Data {
			tr.m.Grads.Data[i] *= scale
		}
	}
	lr := tr.sched.At(tr.step + 1)
	gn, err := tr.opt.Update(tr.m.Params, tr.m.Grads, lr)
	if err != nil {
		return err
	}
	if math.IsNaN(gn) || math.IsInf(gn, 0) {
		return tr.diverged("gradient norm", gn)
	}
	tr.step++
	tr.tokens += int64(tc.Batch * tc.Accum * T)
	el := time.Since(start).Seconds()
	met := Metric{Step: tr.step, Epoch: tr.data.Epoch(), Loss: loss, LR: lr, GradNorm: gn, Tokens: tr.tokens,
		TokensPS: float64(tr.tokens-startTokens) / el, ElapsedS: tr.elapsedBefore + el}
	if tr.step%tc.EvalEvery == 0 || tr.step == tc.Steps {
		v, err := tr.evaluate()
		if err != nil {
			return err
		}
		met.ValLoss = v
	}
	tr.metrics = append(tr.metrics, met)
	return tr.markStep()
}

func (tr *trainer) diverged(what string, v float64) error {
	where := "no checkpoint was written yet"
	if tr.lastGood > 0 {
		where = fmt.Sprintf("the last good checkpoint (step %d) is kept in %s", tr.lastGood, storage.Join(tr.rc.Dir, CheckpointDir))
	}
	return fmt.Errorf("train: %s is %v at step %d (lr %.3g); %s; lower train.lr or set train.clip, then rerun to resume from it",
		what, v, tr.step+1, tr.sched.At(tr.step+1), where)
}

// evaluate returns the mean validation loss in nats per token, or nil when
// there is no validation data.
func (tr *trainer) evaluate() (*float64, error) {
	if len(tr.val) == 0 {
		return nil, nil
	}
	l, _, err := tr.m.Evaluate(tr.val, tr.valMask, tr.obj)
	if err != nil {
		return nil, err
	}
	return &l, nil
}

// initFrom loads the starting weights named by train.init_from: a
// .safetensors file, a checkpoint folder, or a train stage folder (its
// newest checkpoint); a relative path is taken from the root. The
// optimiser and schedule start fresh.
func (tr *trainer) initFrom(ctx context.Context, from string) error {
	path := from
	if !storage.IsGCS(path) && !filepath.IsAbs(path) {
		path = storage.Join(tr.rc.Config.Root, path)
	}
	if !strings.HasSuffix(path, ".safetensors") {
		// A train stage folder: its newest checkpoint, through the same
		// LATEST resolver as a resume (no LATEST: a checkpoint folder).
		latest, err := checkpointStore(path, 1).Latest(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("train.init_from: %w", err)
		case latest != "":
			path = storage.Join(latest, WeightsFile)
		default:
			path = storage.Join(path, WeightsFile)
		}
	}
	w, err := storage.ReadFile(ctx, path)
	if err != nil {
		return fmt.Errorf("train.init_from %s: %w (name a .safetensors file, a checkpoint folder or a train stage folder)", from, err)
	}
	if err := tr.loadWeights(w, path, "train.init_from", ": set train.layers, d and heads to match"); err != nil {
		return err
	}
	sum := sha256.Sum256(w)
	tr.initSHA = hex.EncodeToString(sum[:])
	tr.rc.Log.Info("train: starting from", "weights", path, "sha256", tr.initSHA)
	return nil
}

// loadWeights parses a weights file read from path into the model's
// parameters; it must hold the model's config. what prefixes errors, hint
// follows a config mismatch's message.
func (tr *trainer) loadWeights(w []byte, path, what, hint string) error {
	p, _, err := model.LoadCheckpoint(bytes.NewReader(w))
	if err != nil {
		return fmt.Errorf("%s: %s: %w", what, path, err)
	}
	if p.Config != tr.m.Config {
		return fmt.Errorf("%s: %s holds model %v, the config asks for %v%s", what, path, p.Config, tr.m.Config, hint)
	}
	copy(tr.m.Params.Data, p.Data)
	return nil
}
