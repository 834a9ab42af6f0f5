package stages

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/kmeans"
	"gopkg.in/yaml.v3"
)

// Config is an experiment: where its outputs live and each stage's
// settings. Only the per-stage sections enter stage keys; Root and Runner say
// where and how to run, not what is computed.
type Config struct {
	Root     string         `yaml:"root"`   // local folder or gs://bucket/prefix; default ./igpt-data
	Runner   string         `yaml:"runner"` // Beam runner: prism (default), direct, dataflow; --runner overrides
	Dataset  DatasetConfig  `yaml:"dataset"`
	Download DownloadConfig `yaml:"download"`
	Palette  PaletteConfig  `yaml:"palette"`
	Quantize QuantizeConfig `yaml:"quantize"`
	Train    TrainConfig    `yaml:"train"`
	Probe    ProbeConfig    `yaml:"probe"`
	Sample   SampleConfig   `yaml:"sample"`
	VQVAE    VQVAEConfig    `yaml:"vqvae"`
	// VQVAEEncode is the vqvae-encode stage's section.
	VQVAEEncode VQVAEEncodeConfig `yaml:"vqvae_encode"`

	// Path is the file the config was read from.
	Path string `yaml:"-"`
}

// DatasetConfig says which dataset to read and how to decode it.
type DatasetConfig struct {
	// Name is a registered dataset (cifar10, cifar100, mnist,
	// fashion-mnist, stl10) or "folder" for <split>/<class>/ image trees.
	Name string `yaml:"name" json:"name"`
	// Source overrides the official URL: a local file or directory,
	// file://, gs:// or a mirror https:// URL. Required for "folder".
	Source string `yaml:"source" json:"source,omitempty"`
	// SHA256 of the source file, checked when set (in addition to the
	// registry's checksum).
	SHA256 string `yaml:"sha256" json:"sha256,omitempty"`
	// ImageSize [h, w] that every image of a folder dataset must have;
	// empty accepts any size.
	ImageSize []int `yaml:"image_size" json:"image_size,omitempty"`
	// Channels of folder images: 3 (RGB, default) or 1 (grey).
	Channels int `yaml:"channels" json:"channels,omitempty"`
	// OnBadImage is the policy for a folder image that cannot be decoded or
	// has the wrong size: "fail" (default: the stage stops and names the
	// file) or "skip" (logged, counted in the manifest under "skipped").
	OnBadImage string `yaml:"on_bad_image" json:"on_bad_image,omitempty"`
	// CIFAR100Label picks CIFAR-100's "fine" (default) or "coarse" labels.
	CIFAR100Label string `yaml:"cifar100_label" json:"cifar100_label,omitempty"`
	// Splits maps split names to their own source patterns (webdataset:
	// {train: "gs://b/train-{000000..000146}.tar", test: "gs://b/val-*.tar"}).
	Splits map[string]string `yaml:"splits" json:"splits,omitempty"`
}

// DownloadConfig tunes the download stage's output.
type DownloadConfig struct {
	// ShardMiB is the decoded pixels, in MiB, after which a source unit's
	// output shard is closed and the next begun (default 128). It bounds a
	// worker's memory and sets the parallelism of the stages that follow.
	ShardMiB int `yaml:"shard_mib" json:"shard_mib,omitempty"`
	// Resize, when > 0, scales every image so its short side is Resize and
	// crops the centre Resize×Resize square, in the workers (the paper's
	// preparation of ImageNet at 32, 48 and 64).
	Resize int `yaml:"resize" json:"resize,omitempty"`
	// Shards was the shard count per split before shards followed source
	// units; it is refused with a pointer to ShardMiB.
	Shards map[string]int `yaml:"shards" json:"-"`
}

// defaultShardMiB is download.shard_mib's default.
const defaultShardMiB = 128

// maxDownloadResize bounds download.resize (a 4096² RGB image is 48 MiB).
const maxDownloadResize = 4096

// PaletteConfig tunes the palette stage's k-means.
type PaletteConfig struct {
	// K is the number of colours (default 512, the paper's 9-bit palette).
	// When the training pixels have at most K distinct colours (grey
	// datasets have at most 256), the palette is exactly those colours.
	K int `yaml:"k" json:"k"`
	// Seed of the k-means++ seeding.
	Seed uint64 `yaml:"seed" json:"seed"`
	// MaxIter caps Lloyd iterations (default 1000).
	MaxIter int `yaml:"max_iter" json:"max_iter"`
	// Tol stops Lloyd when the squared centre shift falls below tol × the
	// data's variance (scikit-learn's rule; default 1e-5, ten times tighter
	// than scikit-learn's, which reaches a lower error for little time).
	Tol float64 `yaml:"tol" json:"tol"`
	// Split whose pixels are clustered (default train).
	Split string `yaml:"split" json:"split"`
}

// QuantizeConfig tunes the quantize stage.
type QuantizeConfig struct {
	// Resize, when set, scales every image to [h, w] with an area filter
	// before quantizing (e.g. 64×64 → 32×32).
	Resize []int `yaml:"resize" json:"resize,omitempty"`
	// ValFraction of train becomes the "val" split when the dataset has
	// none (default 0.1, as the paper does for CIFAR and STL-10; 0 keeps
	// train whole).
	ValFraction *float64 `yaml:"val_fraction" json:"val_fraction"`
	// Seed of the shuffle and of the val carving.
	Seed uint64 `yaml:"seed" json:"seed"`
	// Shards per output split; splits left out get one per 8192 records.
	Shards map[string]int `yaml:"shards" json:"shards,omitempty"`
}

// TrainConfig configures the train stage: the model and its optimisation.
type TrainConfig struct {
	// Model names a preset (nano, micro, S, M, L, XL); Layers, D and Heads
	// override its values. The context is the token grid's h×w, the
	// vocabulary the palette's size.
	Model  string `yaml:"model" json:"model"`
	Layers int    `yaml:"layers" json:"layers,omitempty"`
	D      int    `yaml:"d" json:"d,omitempty"`
	Heads  int    `yaml:"heads" json:"heads,omitempty"`
	// Objective is "ar" (autoregressive, default) or "bert".
	Objective string `yaml:"objective" json:"objective"`
	// BERTMaskProb is the masking probability of the BERT objective (0.15).
	BERTMaskProb float64 `yaml:"bert_mask_prob" json:"bert_mask_prob,omitempty"`
	// Batch is the micro-batch in sequences; Accum micro-batches make a step.
	Batch int `yaml:"batch" json:"batch"`
	Accum int `yaml:"accum" json:"accum"`
	// Steps is the number of optimiser steps; the learning rate warms up
	// linearly over WarmupSteps to LR, then decays with a cosine to 0.
	Steps       int     `yaml:"steps" json:"steps"`
	WarmupSteps int     `yaml:"warmup_steps" json:"warmup_steps"`
	LR          float64 `yaml:"lr" json:"lr"`
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay,omitempty"`
	// Clip is the global gradient-norm clip (0: none).
	Clip float64 `yaml:"clip" json:"clip,omitempty"`
	// EvalEvery steps the validation loss is computed on the first
	// EvalRecords records of the val split (test when there is no val).
	EvalEvery   int `yaml:"eval_every" json:"eval_every"`
	EvalRecords int `yaml:"eval_records" json:"eval_records"`
	// CheckpointEvery steps (and on interruption) a checkpoint is written;
	// the last KeepCheckpoints are kept.
	CheckpointEvery int `yaml:"checkpoint_every" json:"checkpoint_every"`
	KeepCheckpoints int `yaml:"keep_checkpoints" json:"keep_checkpoints"`
	// HFlip is the probability that a training sequence is mirrored left
	// to right (its token grid's columns reversed): horizontal-flip
	// augmentation. It is exact for palette tokens, which quantize each
	// pixel on its own; VQ-VAE codes are not flip-equivariant.
	HFlip float64 `yaml:"hflip" json:"hflip,omitempty"`
	// InitFrom starts training from another run's weights instead of a
	// random initialisation, with a fresh optimiser and schedule (continued
	// pretraining). It names a .safetensors file, a checkpoint folder
	// holding model.safetensors, or a train stage folder, whose newest
	// checkpoint is used; a relative path is taken from the root (so
	// "train/<key>" names another run under the same root). The model
	// config must match. The path is part of the stage key; the weights'
	// sha256 is recorded in the manifest.
	InitFrom string `yaml:"init_from" json:"init_from,omitempty"`
	// Seed of initialisation, data order, flips and BERT masks.
	Seed uint64 `yaml:"seed" json:"seed"`
	// ShuffleBuffer is the number of shards whose records are shuffled
	// together (default 2).
	ShuffleBuffer int `yaml:"shuffle_buffer" json:"shuffle_buffer"`
	// Threads for the kernels (default: all cores). Results are bit-for-bit
	// reproducible for a given thread count.
	Threads int `yaml:"threads" json:"threads"`
}

// ProbeConfig configures the linear probes.
type ProbeConfig struct {
	// Batch is the number of records per forward pass (default 64).
	Batch int `yaml:"batch" json:"batch"`
	// L2 is the grid of L2 strengths λ (objective: mean cross-entropy +
	// λ/2·|W|²) tried on the val split; default 1e-1 … 1e-5.
	L2 []float64 `yaml:"l2" json:"l2"`
	// MaxIter caps the L-BFGS iterations of each fit (0: scikit-learn's
	// 1000). Weak λ values on wide features need more to converge.
	MaxIter int `yaml:"max_iter" json:"max_iter,omitempty"`
	// Patience stops each row's grid, fitted from the strongest λ down,
	// after this many λ in a row score below the best validation accuracy
	// so far (0: fit every λ). The weakest λ values cost the most
	// iterations; where accuracy already falls (raw pixels past λ = 0.1)
	// they only overfit further.
	Patience int `yaml:"patience" json:"patience,omitempty"`
	// MaxTrain caps the training records used to fit each probe (0: all).
	MaxTrain int `yaml:"max_train" json:"max_train,omitempty"`
	// MaxPerShard caps the records read from each Tokens shard (0: all),
	// to probe a sample of a large dataset; shards are shuffled, so the
	// first records of each are a random sample.
	MaxPerShard int `yaml:"max_per_shard" json:"max_per_shard,omitempty"`
	// Baselines adds raw pixels and a randomly initialised model of the
	// same config to the report (default true).
	Baselines *bool `yaml:"baselines" json:"baselines"`
	// Seed of the random-init baseline and of the val hold-out when the
	// tokens have no val split.
	Seed uint64 `yaml:"seed" json:"seed"`
}

// SampleConfig configures the sample stage's PNG grids.
type SampleConfig struct {
	// Unconditional samples to draw (default 16).
	Unconditional int `yaml:"unconditional" json:"unconditional"`
	// Images of the test split to complete (default 8), Completions of
	// each (default 4), keeping the top Keep fraction of rows (default 0.5).
	Images      int     `yaml:"images" json:"images"`
	Completions int     `yaml:"completions" json:"completions"`
	Keep        float64 `yaml:"keep" json:"keep"`
	// Temperature (default 1), TopK and TopP (0: off) shape the draws.
	Temperature float64 `yaml:"temperature" json:"temperature"`
	TopK        int     `yaml:"top_k" json:"top_k,omitempty"`
	TopP        float64 `yaml:"top_p" json:"top_p,omitempty"`
	Seed        uint64  `yaml:"seed" json:"seed"`
	// Scale magnifies pixels in the PNGs (default 4).
	Scale int `yaml:"scale" json:"scale"`
}

// DefaultRoot is where outputs go when a config names no root.
const DefaultRoot = "./igpt-data"

// LoadConfig reads a YAML config. Unknown keys are errors, so a typo never
// silently falls back to a default.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Path = path
	if cfg.Root != "" && !storage.IsGCS(cfg.Root) && !filepath.IsAbs(cfg.Root) {
		// Relative roots are relative to the working directory, as a
		// user typing paths expects; keep them as given.
		cfg.Root = filepath.Clean(cfg.Root)
	}
	return cfg, nil
}

// ParseConfig parses YAML config text and fills defaults.
func ParseConfig(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.Runner == "" {
		cfg.Runner = "prism"
	}
	cfg.fillDefaults()
	if err := cfg.checkFinite(); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.checkLimits(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// fillDefaults writes default values into the config, so that a default
// written out and a default left out give the same stage keys.
func (c *Config) fillDefaults() {
	c.VQVAE.fillDefaults()
	c.VQVAEEncode.fillDefaults()
	if c.Palette.K == 0 {
		c.Palette.K = 512
	}
	if c.Palette.MaxIter == 0 {
		c.Palette.MaxIter = kmeans.DefaultMaxIter
	}
	if c.Palette.Tol == 0 {
		c.Palette.Tol = kmeans.DefaultTol
	}
	if c.Palette.Split == "" {
		c.Palette.Split = "train"
	}
	t := &c.Train
	if t.Model == "" {
		t.Model = "nano"
	}
	if t.Objective == "" {
		t.Objective = "ar"
	}
	if t.BERTMaskProb == 0 {
		t.BERTMaskProb = 0.15
	}
	if t.Batch == 0 {
		t.Batch = 8
	}
	if t.Accum == 0 {
		t.Accum = 1
	}
	if t.Steps == 0 {
		t.Steps = 1000
	}
	if t.LR == 0 {
		t.LR = 3e-3
	}
	if t.WarmupSteps == 0 {
		t.WarmupSteps = max(1, t.Steps/20)
	}
	if t.EvalEvery == 0 {
		t.EvalEvery = 100
	}
	if t.EvalRecords == 0 {
		t.EvalRecords = 256
	}
	if t.CheckpointEvery == 0 {
		t.CheckpointEvery = 200
	}
	if t.KeepCheckpoints == 0 {
		t.KeepCheckpoints = 2
	}
	if t.ShuffleBuffer == 0 {
		t.ShuffleBuffer = 2
	}
	if c.Probe.Batch == 0 {
		c.Probe.Batch = 64
	}
	if len(c.Probe.L2) == 0 {
		c.Probe.L2 = []float64{1e-1, 1e-2, 1e-3, 1e-4, 1e-5}
	}
	if c.Probe.Baselines == nil {
		b := true
		c.Probe.Baselines = &b
	}
	sc := &c.Sample
	if sc.Unconditional == 0 {
		sc.Unconditional = 16
	}
	if sc.Images == 0 {
		sc.Images = 8
	}
	if sc.Completions == 0 {
		sc.Completions = 4
	}
	if sc.Keep == 0 {
		sc.Keep = 0.5
	}
	if sc.Temperature == 0 {
		sc.Temperature = 1
	}
	if sc.Scale == 0 {
		sc.Scale = 4
	}
	if c.Quantize.ValFraction == nil {
		v := 0.1
		c.Quantize.ValFraction = &v
	}
}

func (c *Config) validate() error {
	if err := c.VQVAEEncode.validate(); err != nil {
		return err
	}
	if err := c.VQVAE.validate(); err != nil {
		return err
	}
	d := c.Dataset
	if d.Name == "" {
		return fmt.Errorf("dataset.name is required (cifar10, cifar100, mnist, fashion-mnist, stl10 or folder)")
	}
	if d.Name == "folder" && d.Source == "" {
		return fmt.Errorf("dataset.source is required for an image folder: a directory, .tar, .tar.gz or .zip of <split>/<class>/*.png|jpg")
	}
	if len(d.ImageSize) != 0 && (len(d.ImageSize) != 2 || d.ImageSize[0] <= 0 || d.ImageSize[1] <= 0) {
		return fmt.Errorf("dataset.image_size must be [height, width] with positive values, got %v", d.ImageSize)
	}
	if d.Channels != 0 && d.Channels != 1 && d.Channels != 3 {
		return fmt.Errorf("dataset.channels must be 1 or 3, got %d", d.Channels)
	}
	switch d.OnBadImage {
	case "", "fail", "skip":
	default:
		return fmt.Errorf("dataset.on_bad_image must be fail or skip, got %q", d.OnBadImage)
	}
	if len(c.Download.Shards) > 0 {
		return fmt.Errorf("download.shards is no longer used: each source unit now writes its own shards; set download.shard_mib (MiB of pixels per shard, default %d) instead", defaultShardMiB)
	}
	if c.Download.ShardMiB < 0 || c.Download.ShardMiB > 4096 {
		return fmt.Errorf("download.shard_mib must be in 1..4096 (MiB of pixels per shard), got %d", c.Download.ShardMiB)
	}
	if c.Download.Resize < 0 || c.Download.Resize > maxDownloadResize {
		return fmt.Errorf("download.resize must be in 1..%d (the short side, then a centre crop), got %d", maxDownloadResize, c.Download.Resize)
	}
	if c.Palette.K < 2 || c.Palette.K > 65536 {
		return fmt.Errorf("palette.k must be in 2..65536 (tokens are uint16), got %d", c.Palette.K)
	}
	if c.Palette.MaxIter < 0 || c.Palette.Tol < 0 {
		return fmt.Errorf("palette.max_iter and palette.tol must not be negative")
	}
	if q := c.Quantize; len(q.Resize) != 0 && (len(q.Resize) != 2 || q.Resize[0] <= 0 || q.Resize[1] <= 0) {
		return fmt.Errorf("quantize.resize must be [height, width] with positive values, got %v", q.Resize)
	}
	if v := *c.Quantize.ValFraction; v < 0 || v >= 1 {
		return fmt.Errorf("quantize.val_fraction must be in [0, 1), got %v", v)
	}
	if t := c.Train; t.Objective != "ar" && t.Objective != "bert" {
		return fmt.Errorf("train.objective must be ar or bert, got %q", t.Objective)
	} else if t.Batch < 1 || t.Accum < 1 || t.Steps < 1 || t.WarmupSteps < 0 || t.WarmupSteps > t.Steps || t.LR <= 0 {
		return fmt.Errorf("train: batch, accum and steps must be positive, 0 <= warmup_steps <= steps and lr > 0 (got batch %d accum %d steps %d warmup %d lr %v)",
			t.Batch, t.Accum, t.Steps, t.WarmupSteps, t.LR)
	} else if t.BERTMaskProb <= 0 || t.BERTMaskProb >= 1 || t.Clip < 0 || t.WeightDecay < 0 || t.Threads < 0 {
		return fmt.Errorf("train: bert_mask_prob must be in (0, 1) and clip, weight_decay, threads not negative")
	} else if t.HFlip < 0 || t.HFlip > 1 {
		return fmt.Errorf("train.hflip is a probability in [0, 1], got %v", t.HFlip)
	}
	for _, l := range c.Probe.L2 {
		if l <= 0 {
			return fmt.Errorf("probe.l2 values must be positive, got %v", c.Probe.L2)
		}
	}
	if c.Probe.Batch < 1 || c.Probe.MaxTrain < 0 || c.Probe.MaxPerShard < 0 || c.Probe.MaxIter < 0 || c.Probe.Patience < 0 {
		return fmt.Errorf("probe.batch must be positive and probe.max_train, probe.max_per_shard, probe.max_iter, probe.patience not negative")
	}
	if sc := c.Sample; sc.Keep <= 0 || sc.Keep >= 1 || sc.Unconditional < 0 || sc.Images < 0 || sc.Completions < 0 || sc.Scale < 1 {
		return fmt.Errorf("sample: keep must be in (0, 1); counts and scale positive")
	}
	for split, n := range c.Quantize.Shards {
		if n <= 0 {
			return fmt.Errorf("quantize.shards.%s must be positive, got %d", split, n)
		}
	}
	return nil
}
