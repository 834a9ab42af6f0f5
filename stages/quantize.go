package stages

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/pipelines"
)

func init() { Register(quantizeStage{}) }

// quantizeStage maps every image to palette tokens and writes shuffled
// Tokens shards per split, carving a val split from train when the
// dataset has none.
type quantizeStage struct{}

func (quantizeStage) Name() string              { return "quantize" }
func (quantizeStage) Version() int              { return 1 }
func (quantizeStage) Upstream(*Config) []string { return []string{"download", "palette"} }
func (quantizeStage) Params(cfg *Config) any {
	return cfg.Quantize
}

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
	return checkTokenParams("quantize", q.Resize)
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
	plan := planTokenShards(dl, *qc.ValFraction, qc.Shards)
	var resize [2]int
	if len(qc.Resize) == 2 {
		resize = [2]int{qc.Resize[0], qc.Resize[1]}
	}
	rc.Log.Info("quantize: starting", "inputs", len(plan.inputs), "k", pal.K, "val_fraction", plan.valFraction, "shards", plan.shards)
	return runTokenStage(ctx, rc, quantizeStage{}, plan, tokenState{ValFraction: plan.valFraction, Vocab: pal.K}, func(s beam.Scope, list string) (beam.PCollection, error) {
		return pipelines.Quantize(s, pipelines.QuantizeConfig{
			Inputs: list, Palette: pm.Path(PaletteFile), Resize: resize, ValFraction: plan.valFraction, Seed: qc.Seed, Shards: plan.shards, Dir: rc.Dir,
		})
	})
}

// Finish describes the Tokens shards the quantize job wrote.
func (quantizeStage) Finish(ctx context.Context, rc *RunContext, state json.RawMessage) (*Output, error) {
	var ts tokenState
	if err := json.Unmarshal(state, &ts); err != nil {
		return nil, fmt.Errorf("quantize: finish step state: %w", err)
	}
	out, _, err := tokenOutput(ctx, rc, ts.ValFraction)
	if err != nil {
		return nil, err
	}
	out.Meta["vocab"], out.Meta["resize"] = ts.Vocab, rc.Config.Quantize.Resize
	return out, nil
}

// TokensGrid returns the token grid (h×w) of a token stage's records,
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
	return 0, 0, fmt.Errorf("%s output %s has no Tokens records to give the token grid", m.Stage, m.Dir)
}
