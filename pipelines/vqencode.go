package pipelines

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/vqvae"
)

func init() {
	register.DoFn3x1[context.Context, string, func(string, string), error](&EncodeVQFn{})
}

// EncodeVQConfig is the vqvae-encode pipeline's input.
type EncodeVQConfig struct {
	Inputs string // a file of ShardInput JSON lines (WriteLines)
	// Model is the path of the trained VQ-VAE (vqvae.safetensors); each
	// worker loads it once in Setup.
	Model string
	// Vocab is the model's codebook size (the shards' token histograms
	// have this many entries).
	Vocab int
	// Resize, when set, scales every image to [h, w] (area filter) first.
	Resize [2]int
	// Batch is the number of images per forward pass (default 32).
	Batch       int
	ValFraction float64
	Seed        uint64
	Shards      map[string]int
	Dir         string
}

// EncodeVQ maps every image to the code grid of a trained VQ-VAE and
// writes Tokens shards per split (vocab = the codebook size, H×W = the
// code grid), with quantize's val carving, seeded shuffle and shard
// writer, so the two token sources differ only in their tokens. It returns
// the written shards, a PCollection of ShardStats (complete only once every
// shard and StatsName are written: what a step that must run last waits on).
func EncodeVQ(s beam.Scope, cfg EncodeVQConfig) (beam.PCollection, error) {
	if cfg.Inputs == "" || cfg.Model == "" || cfg.Vocab < 1 {
		return beam.PCollection{}, fmt.Errorf("pipelines: vqvae-encode: need an input shard list, a model and its vocab")
	}
	s = s.Scope("vqvae-encode")
	tasks := beam.Reshuffle(s.Scope("SpreadShards"), indexed(s.Scope("ListShards"), cfg.Inputs))
	pieces := beam.ParDo(s.Scope("Encode"), &EncodeVQFn{Model: cfg.Model, Resize: cfg.Resize, Batch: cfg.Batch,
		ValFraction: cfg.ValFraction, Seed: cfg.Seed, Shards: cfg.Shards, Dir: cfg.Dir, Run: runNonce()}, tasks)
	return writeTokenShards(s, pieces, &WriteTokensShardFn{Dir: cfg.Dir, Shards: cfg.Shards, Seed: cfg.Seed, Vocab: cfg.Vocab}), nil
}

// EncodeVQFn encodes the images of one Image shard (a JSON ShardInput) in
// batches and emits their Tokens keyed by output shard.
type EncodeVQFn struct {
	Model       string
	Resize      [2]int
	Batch       int
	ValFraction float64
	Seed        uint64
	Shards      map[string]int
	Dir         string // the output folder, whose pieces the codes are spilled to
	Run         string // runNonce: models are shared within a pipeline, never across
}

// vqModels lends the VQ-VAEs of a process (a Model is not goroutine-safe:
// one per element at a time).
var vqModels lender[*vqvae.Model]

// Setup checks that the model loads.
func (f *EncodeVQFn) Setup(ctx context.Context) error {
	m, err := vqModels.get(ctx, f.Run+"|"+f.Model, func() (*vqvae.Model, error) { return LoadVQVAE(ctx, f.Model) })
	if err == nil {
		vqModels.put(f.Run+"|"+f.Model, m)
	}
	return err
}

// LoadVQVAE reads a trained VQ-VAE from a local or gs:// path.
func LoadVQVAE(ctx context.Context, path string) (*vqvae.Model, error) {
	r, err := storage.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("vqvae-encode: open the model: %w", err)
	}
	defer r.Close()
	m, err := vqvae.Load(r)
	if err != nil {
		return nil, fmt.Errorf("vqvae-encode: load %s: %w; rerun vqvae-train", path, err)
	}
	return m, nil
}

// ProcessElement encodes one shard.
func (f *EncodeVQFn) ProcessElement(ctx context.Context, task string, emit func(string, string)) error {
	m, err := vqModels.get(ctx, f.Run+"|"+f.Model, func() (*vqvae.Model, error) { return LoadVQVAE(ctx, f.Model) })
	if err != nil {
		return err
	}
	defer vqModels.put(f.Run+"|"+f.Model, m)
	var ti IndexedInput
	if err := json.Unmarshal([]byte(task), &ti); err != nil {
		return fmt.Errorf("vqvae-encode: bad input %q: %w", task, err)
	}
	in := ti.Input
	spill := newTokenSpill(f.Dir, ti.Index)
	enc := NewVQEncoder(m, f.Resize, f.Batch)
	flush := func() error {
		toks, err := enc.Flush()
		if err != nil {
			return fmt.Errorf("vqvae-encode: %s: %w", in.Path, err)
		}
		for _, t := range toks {
			key, err := routeTokens(f.Seed, f.ValFraction, f.Shards, in.Split, t.Key)
			if err != nil {
				return fmt.Errorf("vqvae-encode: %w", err)
			}
			spill.add(key, t)
		}
		return nil
	}
	err = ScanShard(ctx, in.Path, func(img records.Image) error {
		if err := enc.Add(img); err != nil {
			return fmt.Errorf("vqvae-encode: %s: %w", in.Path, err)
		}
		if enc.Full() {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	if err := spill.flush(ctx, emit); err != nil {
		return fmt.Errorf("vqvae-encode: %w", err)
	}
	return nil
}

// VQEncoder batches images for a VQ-VAE's forward pass: Add them, Flush
// when Full (and at the end) for their Tokens. It is the one encode path,
// shared by the pipeline, the show and sample tools.
type VQEncoder struct {
	m      *vqvae.Model
	resize [2]int
	batch  int

	imgs []records.Image // pending images (pixels already resized)
	x    []float32       // [len(imgs), h, w, 3] in pixel/255 − 0.5
	h, w int
}

// NewVQEncoder returns an encoder of batches of up to batch images
// (default 32), each resized to resize first when set.
func NewVQEncoder(m *vqvae.Model, resize [2]int, batch int) *VQEncoder {
	if batch <= 0 {
		batch = 32
	}
	return &VQEncoder{m: m, resize: resize, batch: batch}
}

// Full says the batch is ready for Flush.
func (e *VQEncoder) Full() bool { return len(e.imgs) >= e.batch }

// Add converts one image to the model's input and queues it. The images
// of a batch share one size: another size is an error naming both.
func (e *VQEncoder) Add(img records.Image) error {
	pix, h, w := img.Pix, img.H, img.W
	var err error
	if e.resize[0] > 0 && (e.resize[0] != h || e.resize[1] != w) {
		if pix, err = imgproc.Resize(pix, h, w, img.C, e.resize[0], e.resize[1]); err != nil {
			return fmt.Errorf("image %s: %w", img.Key, err)
		}
		h, w = e.resize[0], e.resize[1]
	}
	rgb, err := imgproc.ToRGB(pix, img.C)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Key, err)
	}
	if err := e.m.Cfg.CheckImage(h, w); err != nil {
		return fmt.Errorf("image %s is %d×%d: %w; set a resize that the factor %d divides", img.Key, h, w, err, e.m.Cfg.Factor)
	}
	if len(e.imgs) > 0 && (h != e.h || w != e.w) {
		return fmt.Errorf("image %s is %d×%d, the images before it %d×%d; set a resize so that all images share one size", img.Key, h, w, e.h, e.w)
	}
	e.h, e.w = h, w
	e.x = vqvae.AppendInput(e.x, rgb)
	img.Pix = nil
	e.imgs = append(e.imgs, img)
	return nil
}

// Flush encodes the queued images: Tokens with the code grid, in the order
// they were added.
func (e *VQEncoder) Flush() ([]records.Tokens, error) {
	n := len(e.imgs)
	if n == 0 {
		return nil, nil
	}
	f := e.m.Cfg.Factor
	hq, wq := e.h/f, e.w/f
	codes := make([]uint16, n*hq*wq)
	if err := e.m.Encode(codes, e.x, n, e.h, e.w); err != nil {
		return nil, err
	}
	if n != e.batch {
		e.m.ForgetGraph(n, e.h, e.w) // a shard's last batch: keep one graph, of the full batch
	}
	out := make([]records.Tokens, n)
	for i, img := range e.imgs {
		out[i] = records.Tokens{Key: img.Key, Label: img.Label, H: hq, W: wq, Vocab: e.m.Cfg.K,
			Tok: codes[i*hq*wq : (i+1)*hq*wq : (i+1)*hq*wq]}
	}
	e.imgs, e.x = e.imgs[:0], e.x[:0]
	return out, nil
}
