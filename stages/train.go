package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/loader"
	"github.com/igpt/igpt/internal/progress"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func init() { Register(trainStage{}) }

// Files of the train stage's folder.
const (
	MetricsFile   = "metrics.jsonl"
	LossPlotFile  = "loss.png"
	CheckpointDir = "checkpoints"
	LatestFile    = "LATEST" // names the newest complete checkpoint folder
	WeightsFile   = "model.safetensors"
	OptimFile     = "optimizer.safetensors"
	StateFile     = "state.json"
)

// trainStage trains the transformer on the quantize stage's tokens, on all
// cores of one machine. It resumes from its newest checkpoint.
type trainStage struct{}

func (trainStage) Name() string       { return "train" }
func (trainStage) Version() int       { return 1 }
func (trainStage) Upstream() []string { return []string{"quantize"} }
func (trainStage) Params(cfg *Config) any {
	return cfg.Train
}
func (trainStage) Resumable() bool { return true }

// TrainState is what a checkpoint holds beside the weights and optimiser
// moments: enough to continue bit-for-bit.
type TrainState struct {
	Step     int             `json:"step"`
	Model    model.Config    `json:"model"`
	Position loader.Position `json:"data_position"`
	RNG      []byte          `json:"rng"` // flip and BERT mask generator (PCG state)
	Threads  int             `json:"threads"`
	Time     time.Time       `json:"time"`
	// InitSHA256 is the sha256 of the weights train.init_from named, when
	// the run started from them.
	InitSHA256 string `json:"init_sha256,omitempty"`
}

// Metric is one line of metrics.jsonl.
type Metric struct {
	Step     int      `json:"step"`
	Epoch    int      `json:"epoch"`
	Loss     float64  `json:"loss"`
	ValLoss  *float64 `json:"val_loss,omitempty"`
	LR       float64  `json:"lr"`
	GradNorm float64  `json:"grad_norm"`
	Tokens   int64    `json:"tokens"`
	TokensPS float64  `json:"tokens_per_s"`
	ElapsedS float64  `json:"elapsed_s"`
}

// ModelConfig resolves the train config against the token grid and vocab.
func ModelConfig(tc TrainConfig, seq, vocab int) (model.Config, error) {
	mc, err := model.Preset(tc.Model)
	if err != nil {
		return mc, fmt.Errorf("train.model: %w", err)
	}
	if tc.Layers > 0 {
		mc.Layers = tc.Layers
	}
	if tc.D > 0 {
		mc.D = tc.D
	}
	if tc.Heads > 0 {
		mc.Heads = tc.Heads
	}
	mc.Seq, mc.Vocab = seq, vocab
	return mc, mc.Validate()
}

type trainer struct {
	rc       *RunContext
	tc       TrainConfig
	m        *model.Model
	opt      *model.Optimizer
	sched    model.Schedule
	obj      model.Objective
	data     *loader.Loader
	rng      *rand.PCG
	mask     []bool
	tok      []int32
	val      []int32 // fixed validation tokens [N, T]
	valMask  []bool
	metrics  []Metric
	pos      loader.Position // data position after the last completed step
	rngState []byte          // mask generator state after the last completed step
	step     int
	tokens   int64
	lastGood int    // step of the newest checkpoint
	gridW    int    // token grid width, for horizontal flips
	initSHA  string // sha256 of the train.init_from weights, if any

	resumedFrom string // checkpoint folder resumed from
}

func (trainStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	tc := rc.Config.Train
	qm := rc.Inputs["quantize"]
	if tc.Threads > 0 {
		kernels.SetThreads(tc.Threads)
	}
	tr, err := newTrainer(ctx, rc, qm)
	if err != nil {
		return nil, err
	}
	if err := tr.loop(ctx); err != nil {
		return nil, err
	}
	return tr.output(ctx)
}

func newTrainer(ctx context.Context, rc *RunContext, qm *Manifest) (*trainer, error) {
	tc := rc.Config.Train
	var trainFiles, valFiles []string
	for _, f := range qm.Split("train") {
		trainFiles = append(trainFiles, qm.Path(f.Name))
	}
	valSplit := "val"
	if len(qm.Split(valSplit)) == 0 {
		valSplit = "test"
	}
	for _, f := range qm.Split(valSplit) {
		valFiles = append(valFiles, qm.Path(f.Name))
	}
	if len(trainFiles) == 0 {
		return nil, fmt.Errorf("train: quantize output %s has no train split", qm.Dir)
	}
	first, err := loader.ReadAll(ctx, trainFiles[:1], 1)
	if err != nil {
		return nil, err
	}
	if len(first) == 0 {
		return nil, fmt.Errorf("train: %s is empty", trainFiles[0])
	}
	// The vocabulary is the palette's, not what a record claims; every
	// record read must declare it (the loader checks).
	vocab, err := TokensVocab(qm)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if first[0].Vocab != vocab {
		return nil, fmt.Errorf("train: %s: record %q declares vocab %d, but the quantize output's palette has %d colours (meta.vocab of %s)",
			trainFiles[0], first[0].Key, first[0].Vocab, vocab, storage.Join(qm.Dir, ManifestName))
	}
	mc, err := ModelConfig(tc, first[0].H*first[0].W, vocab)
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
		gridW: first[0].W,
	}
	if obj == model.BERT {
		tr.mask = make([]bool, tc.Batch*mc.Seq)
	}
	pos := loader.Position{}
	resumed, err := tr.resume(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case resumed != nil:
		pos, tr.initSHA = resumed.Position, resumed.InitSHA256
	case tc.InitFrom != "":
		if err := tr.initFrom(ctx, tc.InitFrom); err != nil {
			return nil, err
		}
	default:
		m.Params.Init(tc.Seed)
	}
	if err := m.Reserve(tc.Batch, mc.Seq); err != nil {
		return nil, err
	}
	m.AllocGrads()
	if tr.data, err = loader.New(trainFiles, loader.Options{Seed: tc.Seed, Buffer: tc.ShuffleBuffer, Vocab: vocab}, pos); err != nil {
		if resumed != nil {
			return nil, fmt.Errorf("train: %s: data_position: %w; the checkpoint does not fit the quantize output: delete %s to start over", storage.Join(tr.resumedFrom, StateFile), err, tr.rc.Dir)
		}
		return nil, err
	}
	if err := tr.loadVal(ctx, valFiles, mc); err != nil {
		return nil, err
	}
	rc.Log.Info("train: model", "config", mc.String(), "params", mc.NumParams(), "objective", tc.Objective,
		"batch", tc.Batch, "accum", tc.Accum, "steps", tc.Steps, "threads", kernels.Threads(), "resumed_at", tr.step)
	return tr, nil
}

// loadVal reads the fixed validation set (and, for BERT, its fixed mask).
func (tr *trainer) loadVal(ctx context.Context, files []string, mc model.Config) error {
	recs, err := loader.ReadAll(ctx, files, tr.tc.EvalRecords)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Vocab != mc.Vocab {
			return fmt.Errorf("train: validation record %s declares vocab %d, the palette has %d colours", r.Key, r.Vocab, mc.Vocab)
		}
		if len(r.Tok) != mc.Seq {
			return fmt.Errorf("train: validation record %s has %d tokens, want %d", r.Key, len(r.Tok), mc.Seq)
		}
		for _, v := range r.Tok {
			tr.val = append(tr.val, int32(v))
		}
	}
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
			hflip(tr.tok, tc.Batch, tr.gridW, tc.HFlip, maskRNG)
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
		TokensPS: float64(tr.tokens-startTokens) / el, ElapsedS: el}
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

func ckptName(step int) string { return fmt.Sprintf("step-%08d", step) }

// checkpoint writes weights, optimiser moments and state into a new folder,
// then points LATEST at it, then drops old checkpoints. Every file is
// written atomically and LATEST last, so a run killed at any moment leaves
// the previous checkpoint intact.
func (tr *trainer) checkpoint(ctx context.Context) error {
	if tr.step == tr.lastGood {
		return nil
	}
	dir := storage.Join(tr.rc.Dir, CheckpointDir, ckptName(tr.step))
	var buf bytes.Buffer
	if err := model.SaveCheckpoint(&buf, tr.m.Params, map[string]string{"step": strconv.Itoa(tr.step)}); err != nil {
		return err
	}
	if err := storage.WriteFile(ctx, storage.Join(dir, WeightsFile), buf.Bytes()); err != nil {
		return err
	}
	buf.Reset()
	if err := tr.opt.SaveState(&buf); err != nil {
		return err
	}
	if err := storage.WriteFile(ctx, storage.Join(dir, OptimFile), buf.Bytes()); err != nil {
		return err
	}
	st := TrainState{Step: tr.step, Model: tr.m.Config, Position: tr.pos, RNG: tr.rngState, Threads: kernels.Threads(),
		Time: time.Now().UTC(), InitSHA256: tr.initSHA}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := storage.WriteFile(ctx, storage.Join(dir, StateFile), b); err != nil {
		return err
	}
	if err := tr.writeMetrics(ctx); err != nil {
		return err
	}
	if err := storage.WriteFile(ctx, storage.Join(tr.rc.Dir, CheckpointDir, LatestFile), []byte(ckptName(tr.step)+"\n")); err != nil {
		return err
	}
	tr.lastGood = tr.step
	tr.rc.Log.Debug("train: checkpoint", "step", tr.step, "dir", dir)
	return tr.prune(ctx)
}

// prune removes all but the newest KeepCheckpoints checkpoint folders.
func (tr *trainer) prune(ctx context.Context) error {
	files, err := storage.List(ctx, storage.Join(tr.rc.Dir, CheckpointDir))
	if err != nil {
		return err
	}
	steps := map[string]bool{}
	for _, f := range files {
		if d := storage.Base(storage.Dir(f)); strings.HasPrefix(d, "step-") {
			steps[d] = true
		}
	}
	var names []string
	for n := range steps {
		names = append(names, n)
	}
	sort.Strings(names)
	// Never the newest, nor the one LATEST names (a rerun resumes from
	// it), whatever keep_checkpoints says.
	keep := max(1, tr.tc.KeepCheckpoints)
	for i := 0; i+keep < len(names); i++ {
		if names[i] == ckptName(tr.lastGood) {
			continue
		}
		if err := storage.RemoveAll(ctx, storage.Join(tr.rc.Dir, CheckpointDir, names[i])); err != nil {
			return err
		}
	}
	return nil
}

// resume loads the newest checkpoint of this run key, if any.
func (tr *trainer) resume(ctx context.Context) (*TrainState, error) {
	latest, err := storage.ReadFile(ctx, storage.Join(tr.rc.Dir, CheckpointDir, LatestFile))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	dir := storage.Join(tr.rc.Dir, CheckpointDir, strings.TrimSpace(string(latest)))
	b, err := storage.ReadFile(ctx, storage.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("train: checkpoint %s is incomplete (%w); delete %s to start over", dir, err, tr.rc.Dir)
	}
	var st TrainState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("train: %s: %w", storage.Join(dir, StateFile), err)
	}
	if st.Model != tr.m.Config {
		return nil, fmt.Errorf("train: checkpoint %s is for model %v, the config asks for %v", dir, st.Model, tr.m.Config)
	}
	w, err := storage.ReadFile(ctx, storage.Join(dir, WeightsFile))
	if err != nil {
		return nil, err
	}
	if err := tr.loadWeights(w, storage.Join(dir, WeightsFile), "train", ""); err != nil {
		return nil, err
	}
	o, err := storage.ReadFile(ctx, storage.Join(dir, OptimFile))
	if err != nil {
		return nil, err
	}
	if err := tr.opt.LoadState(bytes.NewReader(o)); err != nil {
		return nil, fmt.Errorf("train: %s: %w", storage.Join(dir, OptimFile), err)
	}
	if err := tr.rng.UnmarshalBinary(st.RNG); err != nil {
		return nil, fmt.Errorf("train: %s: rng state: %w", storage.Join(dir, StateFile), err)
	}
	if st.Threads != kernels.Threads() {
		tr.rc.Log.Warn("train: resuming with another thread count: results stay correct but are not bit-identical to an uninterrupted run",
			"checkpoint_threads", st.Threads, "threads", kernels.Threads())
	}
	if err := tr.readMetrics(ctx, st.Step); err != nil {
		return nil, err
	}
	tr.step, tr.lastGood = st.Step, st.Step
	tr.tokens = int64(st.Step) * int64(tr.tc.Batch*tr.tc.Accum*tr.m.Config.Seq)
	if tr.opt.Step != st.Step {
		return nil, fmt.Errorf("train: checkpoint %s: optimizer is at step %d, state at %d", dir, tr.opt.Step, st.Step)
	}
	tr.resumedFrom = dir
	tr.rc.Log.Info("train: resuming", "step", st.Step, "checkpoint", dir)
	return &st, nil
}

func (tr *trainer) writeMetrics(ctx context.Context) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, m := range tr.metrics {
		enc.Encode(m)
	}
	return storage.WriteFile(ctx, storage.Join(tr.rc.Dir, MetricsFile), buf.Bytes())
}

// readMetrics keeps the metrics up to step from an earlier run.
func (tr *trainer) readMetrics(ctx context.Context, step int) error {
	b, err := storage.ReadFile(ctx, storage.Join(tr.rc.Dir, MetricsFile))
	if errors.Is(err, storage.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var m Metric
		if err := dec.Decode(&m); err != nil {
			break
		}
		if m.Step <= step {
			tr.metrics = append(tr.metrics, m)
		}
	}
	return nil
}

func (tr *trainer) output(ctx context.Context) (*Output, error) {
	if err := tr.writeMetrics(ctx); err != nil {
		return nil, err
	}
	png, err := LossPlot(tr.metrics)
	if err != nil {
		return nil, err
	}
	if err := storage.WriteFile(ctx, storage.Join(tr.rc.Dir, LossPlotFile), png); err != nil {
		return nil, err
	}
	final := storage.Join(CheckpointDir, ckptName(tr.step))
	meta := map[string]any{
		"model": tr.m.Config, "params": tr.m.Config.NumParams(), "steps": tr.step, "tokens": tr.tokens,
		"checkpoint": final, "objective": tr.tc.Objective,
	}
	if tr.initSHA != "" {
		meta["init_from"], meta["init_sha256"] = tr.tc.InitFrom, tr.initSHA
	}
	if n := len(tr.metrics); n > 0 {
		meta["final_loss"] = tr.metrics[n-1].Loss
		for i := n - 1; i >= 0; i-- {
			if v := tr.metrics[i].ValLoss; v != nil {
				meta["final_val_loss"] = *v
				break
			}
		}
	}
	out := &Output{Meta: meta}
	for _, f := range []string{storage.Join(final, WeightsFile), storage.Join(final, OptimFile), storage.Join(final, StateFile), MetricsFile, LossPlotFile} {
		n, err := storage.Size(ctx, storage.Join(tr.rc.Dir, f))
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, FileInfo{Name: f, Bytes: n})
	}
	return out, nil
}

// hflip mirrors each of the B sequences in tok [B, T] left to right with
// probability p: the columns of its token grid (rows of w tokens, raster
// order) are reversed. One draw from rng per sequence, flipped or not, so
// the generator's state depends only on B.
func hflip(tok []int32, B, w int, p float64, rng *rand.Rand) {
	T := len(tok) / B
	for b := range B {
		if rng.Float64() >= p {
			continue
		}
		seq := tok[b*T : (b+1)*T]
		for r := 0; r < T; r += w {
			slices.Reverse(seq[r : r+w])
		}
	}
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
		latest, err := storage.ReadFile(ctx, storage.Join(path, CheckpointDir, LatestFile))
		switch {
		case err == nil:
			path = storage.Join(path, CheckpointDir, strings.TrimSpace(string(latest)), WeightsFile)
		case errors.Is(err, storage.ErrNotExist):
			path = storage.Join(path, WeightsFile)
		default:
			return fmt.Errorf("train.init_from: %w", err)
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
