package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/internal/progress"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/pipelines"
	"github.com/igpt/igpt/vqvae"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
)

func init() { Register(vqvaeTrainStage{}) }

// Files of the vqvae-train stage's folder (beside those it shares with
// train: metrics.jsonl, loss.png, checkpoints/LATEST, state.json,
// optimizer.safetensors).
const (
	VQVAEWeightsFile = "vqvae.safetensors"
	ReconPNGFile     = "reconstructions.png"
	CodebookPlotFile = "codebook.png"
)

// VQVAEParams is the vqvae: section: the model (package vqvae) and its
// training.
type VQVAEParams struct {
	Hidden    int     `yaml:"hidden" json:"hidden"`
	ResHidden int     `yaml:"res_hidden" json:"res_hidden"`
	ResBlocks int     `yaml:"res_blocks" json:"res_blocks"`
	Codes     int     `yaml:"codes" json:"codes"`
	CodeDim   int     `yaml:"code_dim" json:"code_dim"`
	Factor    int     `yaml:"factor" json:"factor"`
	Beta      float64 `yaml:"beta" json:"beta"`
	Decay     float64 `yaml:"decay" json:"decay"`
	Epsilon   float64 `yaml:"epsilon" json:"epsilon"`
	DeadAfter *int    `yaml:"dead_after" json:"dead_after"`

	Batch      int     `yaml:"batch" json:"batch"`
	Steps      int     `yaml:"steps" json:"steps"`
	LR         float64 `yaml:"lr" json:"lr"`
	Seed       uint64  `yaml:"seed" json:"seed"`
	EvalEvery  int     `yaml:"eval_every" json:"eval_every"`
	EvalImages int     `yaml:"eval_images" json:"eval_images"`
	// MaxImages caps the train images held in memory and trained on (0:
	// all), the first of each train shard in turn, evenly over the shards:
	// they are held as bytes, h·w·3 each (ImageNet at 64×64: 15.7 GB
	// whole), so without it the stage's memory follows the data.
	MaxImages int `yaml:"max_images" json:"max_images,omitempty"`
	// ValFraction of the train images (chosen by a hash of the key and
	// seed) is held out as the val split that the evaluations during
	// training read, when the download has no val split; test is read
	// once, at the end.
	ValFraction     *float64 `yaml:"val_fraction" json:"val_fraction"`
	CheckpointEvery int      `yaml:"checkpoint_every" json:"checkpoint_every"`
	KeepCheckpoints int      `yaml:"keep_checkpoints" json:"keep_checkpoints"`
	Threads         int      `yaml:"threads" json:"threads"`
}

func (v *VQVAEParams) fillDefaults() {
	d := vqvae.DefaultConfig()
	def := func(p *int, x int) {
		if *p == 0 {
			*p = x
		}
	}
	deff := func(p *float64, x float64) {
		if *p == 0 {
			*p = x
		}
	}
	def(&v.Hidden, d.Hidden)
	def(&v.ResHidden, d.ResHidden)
	def(&v.ResBlocks, d.ResBlocks)
	def(&v.Codes, d.K)
	def(&v.CodeDim, d.D)
	def(&v.Factor, d.Factor)
	deff(&v.Beta, d.Beta)
	deff(&v.Decay, d.Decay)
	deff(&v.Epsilon, d.Epsilon)
	if v.DeadAfter == nil {
		n := d.DeadAfter
		v.DeadAfter = &n
	}
	def(&v.Batch, 32)
	def(&v.Steps, 1000)
	deff(&v.LR, 3e-4)
	def(&v.EvalEvery, 100)
	def(&v.EvalImages, 1000)
	if v.ValFraction == nil {
		f := 0.1
		v.ValFraction = &f
	}
	def(&v.CheckpointEvery, 200)
	def(&v.KeepCheckpoints, 2)
}

// Model returns the vqvae.Config of the section.
func (v VQVAEParams) Model() vqvae.Config {
	return vqvae.Config{Hidden: v.Hidden, ResHidden: v.ResHidden, ResBlocks: v.ResBlocks, K: v.Codes, D: v.CodeDim,
		Factor: v.Factor, Beta: v.Beta, Decay: v.Decay, Epsilon: v.Epsilon, DeadAfter: *v.DeadAfter}
}

func (v VQVAEParams) check() error {
	if err := v.Model().Validate(); err != nil {
		return fmt.Errorf("%s", strings.Replace(err.Error(), "vqvae: ", "vqvae.", 1))
	}
	return nil
}

// vqvaeTrainStage trains the VQ-VAE on the download stage's images, on one
// machine; it resumes from its newest checkpoint.
type vqvaeTrainStage struct{}

func (vqvaeTrainStage) Name() string              { return "vqvae-train" }
func (vqvaeTrainStage) Version() int              { return 2 } // 2: evaluates on a carved val split, test once at the end
func (vqvaeTrainStage) Upstream(*Config) []string { return []string{"download"} }
func (vqvaeTrainStage) Params(cfg *Config) any    { return cfg.VQVAE }
func (vqvaeTrainStage) Resumable() bool           { return true }

// VQVAEState is a checkpoint's position: the step and the data order.
type VQVAEState struct {
	Step    int       `json:"step"`
	Epoch   int       `json:"epoch"`
	Index   int       `json:"index"` // next position in the epoch's permutation
	Threads int       `json:"threads"`
	Time    time.Time `json:"time"`
}

// VQVAEMetric is one line of metrics.jsonl. Eval fields are set every
// eval_every steps and at the end, on the val (else test) split.
type VQVAEMetric struct {
	Step       int      `json:"step"`
	Loss       float64  `json:"loss"`
	Recon      float64  `json:"recon"`        // MSE / data variance
	MSE255     float64  `json:"mse_255"`      // per pixel and channel, 0–255 units
	Perplexity float64  `json:"perplexity"`   // of the batch's codes
	CodesUsed  int      `json:"codes_used"`   // in the batch
	Restarted  int      `json:"restarted"`    // dead codes restarted this step
	ImagesPS   float64  `json:"images_per_s"` // of the process that ran the step
	ElapsedS   float64  `json:"elapsed_s"`    // wall time since step 0, across resumes
	EvalMSE255 *float64 `json:"eval_mse_255,omitempty"`
	EvalPSNR   *float64 `json:"eval_psnr,omitempty"`
	EvalPerp   *float64 `json:"eval_perplexity,omitempty"`
	EvalUsed   *int     `json:"eval_codes_used,omitempty"`
}

// imageSet is a split's images as float32 pixel/255 − 0.5, [N, H, W, 3]
// (x), or, for the train set, as their bytes (pix), converted a batch at
// a time: a quarter of the memory.
type imageSet struct {
	n, h, w int
	x       []float32
	pix     []byte
}

// image returns image i as model input; dst (when pix holds the images)
// receives it.
func (s *imageSet) image(i int, dst []float32) []float32 {
	sz := s.h * s.w * 3
	if s.pix == nil {
		return s.x[i*sz : (i+1)*sz]
	}
	for j, p := range s.pix[i*sz : (i+1)*sz] {
		dst[j] = float32(p)/255 - 0.5 // vqvae.AppendInput's value
	}
	return dst[:sz]
}

// images returns the first n images as model input.
func (s *imageSet) images(n int) []float32 {
	if s.pix == nil {
		return s.x[:n*s.h*s.w*3]
	}
	return vqvae.AppendInput(nil, s.pix[:n*s.h*s.w*3])
}

// readImageSet reads up to limit (0: all) RGB images of a split, those
// whose key keep accepts (nil: all), as float32 input; readImageBytes
// holds them as bytes, at most perShard (0: all) of each shard.
func readImageSet(ctx context.Context, m *Manifest, split string, limit int, keep func(key string) bool) (*imageSet, error) {
	return readImageSplit(ctx, m, split, imageRead{limit: limit, keep: keep})
}

// expect (the images it will hold, at most) sizes its one allocation.
func readImageBytes(ctx context.Context, m *Manifest, split string, limit, perShard int, expect int64, keep func(key string) bool) (*imageSet, error) {
	return readImageSplit(ctx, m, split, imageRead{limit: limit, perShard: perShard, keep: keep, asBytes: true, expect: expect})
}

// imageRead says which images readImageSplit reads and how it holds them.
type imageRead struct {
	limit, perShard int               // at most limit in all, perShard of each shard (0: no bound)
	keep            func(string) bool // the keys read (nil: all)
	asBytes         bool              // hold pixels as bytes, not as float32 model input
	expect          int64             // with asBytes, the images held at most: sizes the one allocation
}

// readImageSplit reads a split's RGB images as r says.
func readImageSplit(ctx context.Context, m *Manifest, split string, r imageRead) (*imageSet, error) {
	limit, perShard, keep, asBytes, expect := r.limit, r.perShard, r.keep, r.asBytes, r.expect
	s := &imageSet{}
	stop, shardDone := errors.New("enough"), errors.New("shard done")
	for _, f := range m.Split(split) {
		fromShard := 0
		path := m.Path(f.Name)
		rc, err := storage.Open(ctx, path)
		if err != nil {
			return nil, err
		}
		err = records.Scan(rc, path, func(im records.Image) error {
			if im.C != 3 {
				return fmt.Errorf("vqvae-train: %s: image %s has %d channels; the VQ-VAE takes RGB", path, im.Key, im.C)
			}
			if keep != nil && !keep(im.Key) {
				return nil
			}
			if s.n == 0 {
				s.h, s.w = im.H, im.W
			} else if im.H != s.h || im.W != s.w {
				return fmt.Errorf("vqvae-train: %s: image %s is %d×%d, the others %d×%d", path, im.Key, im.H, im.W, s.h, s.w)
			}
			if asBytes {
				if s.pix == nil {
					s.pix = make([]byte, 0, expect*int64(len(im.Pix)))
				}
				s.pix = append(s.pix, im.Pix...)
			} else {
				s.x = vqvae.AppendInput(s.x, im.Pix)
			}
			s.n++
			fromShard++
			if limit > 0 && s.n >= limit {
				return stop
			}
			if perShard > 0 && fromShard >= perShard {
				return shardDone
			}
			return nil
		})
		rc.Close()
		if errors.Is(err, stop) {
			break
		}
		if errors.Is(err, shardDone) {
			err = nil
		}
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

type vqTrainer struct {
	rc         *RunContext
	vc         VQVAEParams
	m          *vqvae.Model
	opt        *vqvae.Adam
	train      *imageSet
	eval       *imageSet
	dataVar    float64
	perm       []int
	st         VQVAEState
	lastGood   int
	batch      []float32
	metrics    []VQVAEMetric
	evalCounts []int // code counts of the last evaluation
}

func (vqvaeTrainStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	vc := rc.Config.VQVAE
	if vc.Threads > 0 {
		kernels.SetThreads(vc.Threads)
	}
	dl := rc.Inputs["download"]
	// Evaluations during training read val: the download's, else a
	// seeded val_fraction of train held out from training. Test is read
	// once, for the final report (output).
	carve := len(dl.Split("val")) == 0
	inVal := func(key string) bool { return carve && pipelines.InVal(vc.Seed, *vc.ValFraction, key) }
	// The memory is checked before the train images are read: they are
	// held, h·w·3 bytes each, up to vqvae.max_images.
	ih, iw, _, err := downloadImageShape(ctx, dl)
	if err != nil {
		return nil, fmt.Errorf("vqvae-train: %w", err)
	}
	held, perShard := vqvaeTrainImages(dl, vc.MaxImages)
	if err := checkVQVAEMemory("vqvae-train", fmt.Sprintf("vqvae.batch %d, vqvae.eval_images %d and vqvae.max_images %d (%d train images held) of %d×%d images with vqvae.hidden %d, res_blocks %d, codes %d, code_dim %d",
		vc.Batch, vc.EvalImages, vc.MaxImages, held, ih, iw, vc.Hidden, vc.ResBlocks, vc.Codes, vc.CodeDim), vc.Model(), vc.Batch, ih, iw, vc.EvalImages, true,
		"set or lower vqvae.max_images, or lower vqvae.batch, vqvae.eval_images, vqvae.hidden, vqvae.res_blocks or vqvae.codes",
		memTerm{"train images held", 3 * float64(ih) * float64(iw) * float64(held)}); err != nil {
		return nil, err
	}
	train, err := readImageBytes(ctx, dl, "train", vc.MaxImages, perShard, max(held, 1), func(key string) bool { return !inVal(key) })
	if err != nil {
		return nil, err
	}
	if train.n == 0 {
		return nil, fmt.Errorf("vqvae-train: download output %s has no train images", dl.Dir)
	}
	if err := vc.Model().CheckImage(train.h, train.w); err != nil {
		return nil, fmt.Errorf("vqvae.factor = %d must divide the dataset's %d×%d images", vc.Factor, train.h, train.w)
	}
	evalSplit, evalFrom, keep := "val", "val", func(string) bool { return true }
	if carve {
		evalFrom, keep = "train", inVal
	}
	eval, err := readImageSet(ctx, dl, evalFrom, vc.EvalImages, keep)
	if err != nil {
		return nil, err
	}
	if eval.n > 0 && (eval.h != train.h || eval.w != train.w) {
		return nil, fmt.Errorf("vqvae-train: %s images are %d×%d, train images %d×%d", evalSplit, eval.h, eval.w, train.h, train.w)
	}
	m, err := vqvae.New(vc.Model(), vc.Seed)
	if err != nil {
		return nil, fmt.Errorf("vqvae-train: %w", err)
	}
	tr := &vqTrainer{rc: rc, vc: vc, m: m, opt: vqvae.NewAdam(m, float32(vc.LR), 0.9, 0.999, 1e-8),
		train: train, eval: eval, dataVar: pixelVariance(train.pix), batch: make([]float32, vc.Batch*train.h*train.w*3)}
	if err := tr.resume(ctx); err != nil {
		return nil, err
	}
	tr.perm = epochPerm(vc.Seed, tr.st.Epoch, train.n)
	rc.Log.Info("vqvae-train: data", "train_images", train.n, "eval_split", evalSplit, "eval_images", eval.n,
		"size", fmt.Sprintf("%dx%d", train.h, train.w), "data_variance", tr.dataVar, "resumed_at", tr.st.Step, "threads", kernels.Threads())
	if err := tr.loop(ctx); err != nil {
		return nil, err
	}
	return tr.output(ctx)
}

// pixelVariance is variance over the model inputs of pix (the same
// values, summed in the same order).
func pixelVariance(pix []byte) float64 {
	var s, ss float64
	for _, p := range pix {
		v := float64(float32(p)/255 - 0.5)
		s += v
		ss += v * v
	}
	n := float64(len(pix))
	return ss/n - (s/n)*(s/n)
}

// vqvaeTrainImages returns how many train images vqvae-train holds under
// vqvae.max_images (0: all) and how many of each train shard it reads.
func vqvaeTrainImages(dl *Manifest, maxImages int) (held int64, perShard int) {
	files := dl.Split("train")
	held = dl.Records("train")
	if maxImages > 0 && len(files) > 0 {
		perShard = (maxImages + len(files) - 1) / len(files)
		held = min(held, int64(maxImages))
	}
	return held, perShard
}

// epochPerm is the order of the training images in an epoch: a shuffle
// seeded by (seed, epoch), so that a resumed run continues it exactly.
func epochPerm(seed uint64, epoch, n int) []int {
	return rand.New(rand.NewPCG(seed, uint64(epoch)+0x9e3779b97f4a7c15)).Perm(n)
}

// nextBatch fills tr.batch with the next Batch images of the epoch order.
func (tr *vqTrainer) nextBatch() {
	sz := tr.train.h * tr.train.w * 3
	for b := 0; b < tr.vc.Batch; b++ {
		if tr.st.Index == len(tr.perm) {
			tr.st.Epoch++
			tr.st.Index = 0
			tr.perm = epochPerm(tr.vc.Seed, tr.st.Epoch, tr.train.n)
		}
		tr.train.image(tr.perm[tr.st.Index], tr.batch[b*sz:(b+1)*sz])
		tr.st.Index++
	}
}

func (tr *vqTrainer) loop(ctx context.Context) error {
	vc := tr.vc
	bar := progress.Start("vqvae-train: steps", int64(tr.st.Step), int64(vc.Steps), tr.rc.Log)
	defer bar.Finish()
	start, startStep := time.Now(), tr.st.Step
	// Wall time counts across resumes, from the last kept metric.
	before := 0.0
	if n := len(tr.metrics); n > 0 {
		before = tr.metrics[n-1].ElapsedS
	}
	h, w := tr.train.h, tr.train.w
	for tr.st.Step < vc.Steps {
		if err := ctx.Err(); err != nil {
			if serr := tr.checkpoint(context.WithoutCancel(ctx)); serr != nil {
				return errors.Join(err, serr)
			}
			return fmt.Errorf("vqvae-train: interrupted after step %d; checkpoint saved in %s: rerun the same command to resume: %w", tr.st.Step, tr.rc.Dir, err)
		}
		tr.nextBatch()
		s, restarted, err := vqvae.TrainStep(tr.m, tr.opt, tr.batch, vc.Batch, h, w, tr.dataVar)
		if err != nil {
			return fmt.Errorf("vqvae-train: %w", err)
		}
		if math.IsNaN(s.Loss) || math.IsInf(s.Loss, 0) {
			where := "no checkpoint was written yet"
			if tr.lastGood > 0 {
				where = fmt.Sprintf("the last good checkpoint (step %d) is kept in %s", tr.lastGood, storage.Join(tr.rc.Dir, CheckpointDir, ckptName(tr.lastGood)))
			}
			return fmt.Errorf("vqvae-train: loss is %v at step %d; %s; lower vqvae.lr, then rerun to resume from it", s.Loss, tr.st.Step+1, where)
		}
		tr.st.Step++
		el := time.Since(start).Seconds()
		met := VQVAEMetric{Step: tr.st.Step, Loss: s.Loss, Recon: s.Recon, MSE255: s.MSE * 255 * 255, Perplexity: s.Perplexity,
			CodesUsed: s.Used, Restarted: restarted, ImagesPS: float64((tr.st.Step-startStep)*vc.Batch) / el, ElapsedS: before + el}
		if tr.st.Step%vc.EvalEvery == 0 || tr.st.Step == vc.Steps {
			if err := tr.evaluate(&met); err != nil {
				return err
			}
		}
		tr.metrics = append(tr.metrics, met)
		bar.Set(int64(tr.st.Step))
		if met.EvalMSE255 != nil {
			tr.rc.Log.Info("vqvae-train", "step", met.Step, "loss", met.Loss, "mse_255", met.MSE255, "perplexity", met.Perplexity, "images_per_s", met.ImagesPS)
		}
		if tr.st.Step%vc.CheckpointEvery == 0 || tr.st.Step == vc.Steps {
			if err := tr.checkpoint(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// evaluate reconstructs the eval (val) images and records MSE, PSNR,
// perplexity and codes used in met, and the code counts for the plot.
func (tr *vqTrainer) evaluate(met *VQVAEMetric) error {
	counts, err := tr.evaluateSet(tr.eval, met)
	if counts != nil {
		tr.evalCounts = counts
	}
	return err
}

// evaluateSet reconstructs e's images (batches of Batch) into met's eval
// fields and returns the code counts; nothing when e is empty.
func (tr *vqTrainer) evaluateSet(e *imageSet, met *VQVAEMetric) ([]int, error) {
	if e.n == 0 {
		return nil, nil
	}
	f := tr.vc.Factor
	per := (e.h / f) * (e.w / f)
	codes := make([]uint16, tr.vc.Batch*per)
	rec := make([]float32, tr.vc.Batch*e.h*e.w*3)
	counts := make([]int, tr.vc.Codes)
	var se float64
	for i := 0; i < e.n; i += tr.vc.Batch {
		n := min(tr.vc.Batch, e.n-i)
		x := e.x[i*e.h*e.w*3 : (i+n)*e.h*e.w*3]
		if err := tr.m.Encode(codes, x, n, e.h, e.w); err != nil {
			return nil, fmt.Errorf("vqvae-train: eval: %w", err)
		}
		for _, c := range codes[:n*per] {
			counts[c]++
		}
		if err := tr.m.Decode(rec, codes, n, e.h/f, e.w/f); err != nil {
			return nil, fmt.Errorf("vqvae-train: eval: %w", err)
		}
		for j, v := range x {
			d := float64(vqvae.OutputPixel(rec[j]) - vqvae.OutputPixel(v))
			se += d * d
		}
	}
	mse := se / float64(len(e.x))
	psnr := 10 * math.Log10(255*255/mse)
	var ent float64
	used := 0
	total := float64(e.n * per)
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / total
			ent -= p * math.Log(p)
			used++
		}
	}
	perp := math.Exp(ent)
	met.EvalMSE255, met.EvalPSNR, met.EvalPerp, met.EvalUsed = &mse, &psnr, &perp, &used
	return counts, nil
}

// testReport evaluates the final model on up to eval_images test images:
// the only time vqvae-train reads the test split. It adds test_* figures
// to meta (none without a test split).
func (tr *vqTrainer) testReport(ctx context.Context, meta map[string]any) error {
	dl := tr.rc.Inputs["download"]
	test, err := readImageSet(ctx, dl, "test", tr.vc.EvalImages, nil)
	if err != nil {
		return err
	}
	var met VQVAEMetric
	if _, err := tr.evaluateSet(test, &met); err != nil || met.EvalMSE255 == nil {
		return err
	}
	meta["test_images"], meta["test_mse_255"], meta["test_psnr"] = test.n, *met.EvalMSE255, *met.EvalPSNR
	meta["test_perplexity"], meta["test_codes_used"] = *met.EvalPerp, *met.EvalUsed
	tr.rc.Log.Info("vqvae-train: test (once, at the end)", "images", test.n, "mse_255", *met.EvalMSE255, "psnr", *met.EvalPSNR)
	return nil
}

// checkpoint saves the model, optimiser and state as a new checkpoint
// (see model.CheckpointStore), the metrics before LATEST.
func (tr *vqTrainer) checkpoint(ctx context.Context) error {
	if tr.st.Step == tr.lastGood {
		return nil
	}
	var w, o bytes.Buffer
	if err := tr.m.Save(&w); err != nil {
		return err
	}
	if err := tr.opt.Save(&o, tr.m); err != nil {
		return err
	}
	st := tr.st
	st.Threads, st.Time = kernels.Threads(), time.Now().UTC()
	b, _ := json.MarshalIndent(st, "", "  ")
	files := []model.CheckpointFile{{Name: VQVAEWeightsFile, Data: w.Bytes()}, {Name: OptimFile, Data: o.Bytes()}, {Name: StateFile, Data: b}}
	store := checkpointStore(tr.rc.Dir, tr.vc.KeepCheckpoints)
	if err := store.Save(ctx, tr.st.Step, files, func() error { return tr.writeMetrics(ctx) }); err != nil {
		return err
	}
	tr.lastGood = tr.st.Step
	return nil
}

func (tr *vqTrainer) resume(ctx context.Context) error {
	dir, err := checkpointStore(tr.rc.Dir, tr.vc.KeepCheckpoints).Latest(ctx)
	if err != nil || dir == "" {
		return err
	}
	b, err := storage.ReadFile(ctx, storage.Join(dir, StateFile))
	if err != nil {
		return fmt.Errorf("vqvae-train: checkpoint %s is incomplete (%w); delete %s to start over", dir, err, tr.rc.Dir)
	}
	var st VQVAEState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("vqvae-train: %s: %w", storage.Join(dir, StateFile), err)
	}
	wb, err := storage.ReadFile(ctx, storage.Join(dir, VQVAEWeightsFile))
	if err != nil {
		return err
	}
	m, err := vqvae.Load(bytes.NewReader(wb))
	if err != nil {
		return fmt.Errorf("vqvae-train: %s: %w", storage.Join(dir, VQVAEWeightsFile), err)
	}
	if err := checkResume("vqvae-train", dir, tr.rc.Dir, tr.m.Cfg, m.Cfg, resumeBound{"step", st.Step, 0, tr.vc.Steps},
		resumeBound{"epoch", st.Epoch, 0, tr.vc.Steps * tr.vc.Batch}, resumeBound{"index", st.Index, 0, tr.train.n}); err != nil {
		return err
	}
	ob, err := storage.ReadFile(ctx, storage.Join(dir, OptimFile))
	if err != nil {
		return err
	}
	opt := vqvae.NewAdam(m, tr.opt.LR, tr.opt.Beta1, tr.opt.Beta2, tr.opt.Eps)
	if err := opt.Load(bytes.NewReader(ob), m); err != nil {
		return fmt.Errorf("vqvae-train: %s: %w", storage.Join(dir, OptimFile), err)
	}
	if opt.Step != st.Step {
		return fmt.Errorf("vqvae-train: checkpoint %s: optimizer is at step %d, state at %d", dir, opt.Step, st.Step)
	}
	if st.Threads != kernels.Threads() {
		tr.rc.Log.Warn("vqvae-train: resuming with another thread count: results stay correct but may not be bit-identical",
			"checkpoint_threads", st.Threads, "threads", kernels.Threads())
	}
	tr.m, tr.opt, tr.st, tr.lastGood = m, opt, st, st.Step
	if err := tr.readMetrics(ctx); err != nil {
		return err
	}
	tr.rc.Log.Info("vqvae-train: resuming", "step", st.Step, "checkpoint", dir)
	return nil
}

func (tr *vqTrainer) writeMetrics(ctx context.Context) error {
	return writeMetricLines(ctx, tr.rc.Dir, tr.metrics)
}

func (tr *vqTrainer) readMetrics(ctx context.Context) error {
	var err error
	tr.metrics, err = readMetricLines(ctx, tr.rc.Dir, func(m VQVAEMetric) bool { return m.Step <= tr.st.Step })
	return err
}

func (tr *vqTrainer) output(ctx context.Context) (*Output, error) {
	if err := tr.writeMetrics(ctx); err != nil {
		return nil, err
	}
	if tr.evalCounts == nil && tr.eval.n > 0 {
		var met VQVAEMetric // resumed at the end: counts for the plot
		if err := tr.evaluate(&met); err != nil {
			return nil, err
		}
	}
	files := map[string]func() ([]byte, error){
		LossPlotFile:     func() ([]byte, error) { return vqvaeLossPlot(tr.metrics) },
		ReconPNGFile:     tr.reconstructionsPNG,
		CodebookPlotFile: func() ([]byte, error) { return codebookPlot(tr.evalCounts) },
	}
	for name, f := range files {
		b, err := f()
		if err != nil {
			return nil, fmt.Errorf("vqvae-train: %s: %w", name, err)
		}
		if err := storage.WriteFile(ctx, storage.Join(tr.rc.Dir, name), b); err != nil {
			return nil, err
		}
	}
	final := storage.Join(CheckpointDir, ckptName(tr.st.Step))
	meta := map[string]any{"model": tr.m.Cfg, "steps": tr.st.Step, "checkpoint": storage.Join(final, VQVAEWeightsFile),
		"data_variance": tr.dataVar, "image_size": []int{tr.train.h, tr.train.w}}
	if n := len(tr.metrics); n > 0 {
		meta["minutes"] = tr.metrics[n-1].ElapsedS / 60
	}
	meta["eval_split"], meta["eval_images"], meta["train_images"] = "val", tr.eval.n, tr.train.n
	for i := len(tr.metrics) - 1; i >= 0; i-- {
		if m := tr.metrics[i]; m.EvalMSE255 != nil {
			meta["eval_mse_255"], meta["eval_psnr"], meta["eval_perplexity"], meta["eval_codes_used"] = *m.EvalMSE255, *m.EvalPSNR, *m.EvalPerp, *m.EvalUsed
			break
		}
	}
	if err := tr.testReport(ctx, meta); err != nil {
		return nil, err
	}
	out := &Output{Meta: meta}
	for _, f := range []string{storage.Join(final, VQVAEWeightsFile), storage.Join(final, OptimFile), storage.Join(final, StateFile),
		MetricsFile, LossPlotFile, ReconPNGFile, CodebookPlotFile} {
		n, err := storage.Size(ctx, storage.Join(tr.rc.Dir, f))
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, FileInfo{Name: f, Bytes: n})
	}
	return out, nil
}

// reconstructionsPNG shows up to 16 eval images (train images without an
// eval split), originals above their reconstructions, in rows of 8.
func (tr *vqTrainer) reconstructionsPNG() ([]byte, error) {
	set := tr.eval
	if set.n == 0 {
		set = tr.train
	}
	n := min(16, set.n)
	h, w := set.h, set.w
	rec := make([]float32, n*h*w*3)
	x := set.images(n)
	if err := tr.m.Reconstruct(rec, x, n, h, w); err != nil {
		return nil, err
	}
	const cols, gap = 8, 2
	rows := (n + cols - 1) / cols
	img := image.NewRGBA(image.Rect(0, 0, cols*(w+gap)+gap, rows*2*(h+gap)+gap))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	for i := 0; i < n; i++ {
		for k, src := range [][]float32{x[i*h*w*3 : (i+1)*h*w*3], rec[i*h*w*3 : (i+1)*h*w*3]} {
			x0, y0 := gap+(i%cols)*(w+gap), gap+((i/cols)*2+k)*(h+gap)
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					p := src[(y*w+x)*3:]
					img.SetRGBA(x0+x, y0+y, color.RGBA{uint8(vqvae.OutputPixel(p[0])), uint8(vqvae.OutputPixel(p[1])), uint8(vqvae.OutputPixel(p[2])), 255})
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// vqvaeLossPlot draws the training reconstruction MSE and the eval MSE
// (0–255 units) against the step.
func vqvaeLossPlot(ms []VQVAEMetric) ([]byte, error) {
	var train, eval plotter.XYs
	for _, m := range ms {
		train = append(train, plotter.XY{X: float64(m.Step), Y: m.MSE255})
		if m.EvalMSE255 != nil {
			eval = append(eval, plotter.XY{X: float64(m.Step), Y: *m.EvalMSE255})
		}
	}
	return trainEvalPlot("VQ-VAE reconstruction error", "MSE per pixel and channel (0–255 units)", "train batch", train, "eval", eval, legendTop)
}

// codebookPlot draws how often each code was chosen on the eval images,
// codes sorted by frequency.
func codebookPlot(counts []int) ([]byte, error) {
	p := plot.New()
	used := 0
	var xy plotter.XYs
	sorted := append([]int(nil), counts...)
	sort.Sort(sort.Reverse(sort.IntSlice(sorted)))
	for i, c := range sorted {
		if c > 0 {
			used++
		}
		xy = append(xy, plotter.XY{X: float64(i), Y: float64(c)})
	}
	p.Title.Text = fmt.Sprintf("codebook usage on eval images: %d of %d codes used", used, len(counts))
	p.X.Label.Text = "code rank"
	p.Y.Label.Text = "times chosen"
	p.Add(plotter.NewGrid())
	if len(xy) > 0 {
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color = plotColor(0)
		p.Add(l)
	}
	return PlotPNG(p)
}
