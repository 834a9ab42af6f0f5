package stages

import (
	"context"
	"fmt"
	"io"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/pipelines"
)

func init() { Register(quantizeStage{}) }

// quantizeStage maps every image to palette tokens and writes shuffled
// Tokens shards per split, carving a val split from train when the
// dataset has none.
type quantizeStage struct{}

func (quantizeStage) Name() string       { return "quantize" }
func (quantizeStage) Version() int       { return 1 }
func (quantizeStage) Upstream() []string { return []string{"download", "palette"} }
func (quantizeStage) Params(cfg *Config) any {
	return cfg.Quantize
}

// tokensPerShard sets the default shard count: one shard per this many
// records.
const tokensPerShard = 8192

// QuantizeParams tunes the quantize stage.
type QuantizeParams struct {
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

func (q *QuantizeParams) fillDefaults() {
	if q.ValFraction == nil {
		v := 0.1
		q.ValFraction = &v
	}
}

func (q QuantizeParams) check() error {
	if r := q.Resize; len(r) != 0 && (len(r) != 2 || r[0] <= 0 || r[1] <= 0) {
		return fmt.Errorf("quantize.resize must be [height, width] with positive values, got %v", r)
	}
	if r := q.Resize; len(r) == 2 && int64(r[0])*int64(r[1]) > MaxResizePixels {
		return fmt.Errorf("quantize.resize %v is %d pixels per image (%.3g GB of RGB, and a token sequence as long); at most %d: lower quantize.resize",
			r, int64(r[0])*int64(r[1]), float64(r[0])*float64(r[1])*3/1e9, MaxResizePixels)
	}
	if v := *q.ValFraction; v < 0 || v >= 1 {
		return fmt.Errorf("quantize.val_fraction must be in [0, 1), got %v", v)
	}
	for split, n := range q.Shards {
		if n <= 0 {
			return fmt.Errorf("quantize.shards.%s must be positive, got %d", split, n)
		}
	}
	return nil
}

func (quantizeStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	qc := rc.Config.Quantize
	dl, pm := rc.Inputs["download"], rc.Inputs["palette"]
	pal, _, err := ReadPalette(ctx, pm)
	if err != nil {
		return nil, err
	}
	if pal.K != rc.Config.Palette.K && pal.K != pal.Distinct {
		return nil, fmt.Errorf("quantize: palette %s has k = %d but the config asks for palette.k = %d; rerun: igpt stage palette %s --force",
			pm.Path(PaletteFile), pal.K, rc.Config.Palette.K, rc.Config.Path)
	}
	var inputs []pipelines.ShardInput
	counts := map[string]int64{}
	for _, f := range dl.Files {
		if f.Split == "" {
			continue
		}
		inputs = append(inputs, pipelines.ShardInput{Path: dl.Path(f.Name), Split: f.Split})
		counts[f.Split] += f.Records
	}
	valFrac := *qc.ValFraction
	if counts["val"] > 0 || counts["train"] == 0 {
		valFrac = 0 // the dataset has its own val split, or no train to carve from
	}
	if valFrac > 0 {
		carved := int64(float64(counts["train"]) * valFrac)
		counts["val"], counts["train"] = carved, counts["train"]-carved
	}
	shards := map[string]int{}
	for split, n := range counts {
		shards[split] = qc.Shards[split]
		if shards[split] == 0 {
			shards[split] = max(1, int((n+tokensPerShard-1)/tokensPerShard))
		}
	}
	var resize [2]int
	if len(qc.Resize) == 2 {
		resize = [2]int{qc.Resize[0], qc.Resize[1]}
	}
	rc.Log.Info("quantize: starting", "inputs", len(inputs), "k", pal.K, "val_fraction", valFrac, "shards", shards)

	list := storage.Join(rc.Dir, InputsName)
	if err := pipelines.WriteLines(ctx, list, inputs); err != nil {
		return nil, err
	}
	p, s := beam.NewPipelineWithRoot()
	if _, err := pipelines.Quantize(s, pipelines.QuantizeConfig{
		Inputs: list, Palette: pm.Path(PaletteFile), Resize: resize, ValFraction: valFrac, Seed: qc.Seed, Shards: shards, Dir: rc.Dir,
	}); err != nil {
		return nil, err
	}
	job, err := runPipeline(ctx, rc, p)
	if err != nil {
		return nil, err
	}
	st, err := pipelines.ReadDownloadStats(ctx, rc.Dir)
	if err != nil {
		return nil, err
	}
	dlOut, err := ReadDownloadOutput(dl)
	if err != nil {
		return nil, err
	}
	classes := dlOut.Classes
	files, records, classCounts := summarizeShards(st.Shards, classes, "Tokens")
	out := &Output{JobID: job, Files: files}
	out.Meta = map[string]any{
		"vocab": pal.K, "records": records, "class_counts": classCounts, "classes": classes,
		"val_fraction": valFrac, "resize": qc.Resize,
	}
	return out, nil
}

// QuantizeOutput is what the quantize stage records beside its Tokens
// shards (manifest meta).
type QuantizeOutput struct {
	// Vocab is the palette's size, which every record must declare.
	Vocab       int              `json:"vocab"`
	Classes     []string         `json:"classes"`
	Records     map[string]int64 `json:"records"`
	ValFraction float64          `json:"val_fraction"`
	Resize      []int            `json:"resize"`
}

// ReadQuantizeOutput reads a quantize stage's typed output, checking its
// vocabulary is a palette size.
func ReadQuantizeOutput(m *Manifest) (QuantizeOutput, error) {
	var out QuantizeOutput
	if err := decodeMeta(m, "quantize", &out); err != nil {
		return out, err
	}
	if out.Vocab < 1 || out.Vocab > 1<<16 {
		return out, fmt.Errorf("quantize output %s: manifest meta.vocab = %v is not a palette size in 1..65536; delete the folder and rerun quantize", m.Dir, m.Meta["vocab"])
	}
	return out, nil
}

// TokensGrid returns the token grid (h×w) of a quantize output's records,
// read from the first record of its first shard.
func TokensGrid(ctx context.Context, m *Manifest) (h, w int, err error) {
	for _, f := range m.Files {
		if f.Split == "" {
			continue
		}
		err := pipelines.ScanShard(ctx, m.Path(f.Name), func(t records.Tokens) error {
			h, w = t.H, t.W
			return io.EOF
		})
		if err != nil {
			return 0, 0, err
		}
		if h > 0 && w > 0 {
			return h, w, nil
		}
	}
	return 0, 0, fmt.Errorf("quantize output %s has no Tokens records to give the token grid", m.Dir)
}
