package stages

import (
	"context"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
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

	list := storage.Join(rc.Dir, InputsName)
	if err := pipelines.WriteLines(ctx, list, plan.inputs); err != nil {
		return nil, err
	}
	p, s := beam.NewPipelineWithRoot()
	if err := pipelines.Quantize(s, pipelines.QuantizeConfig{
		Inputs: list, Palette: pm.Path(PaletteFile), Resize: resize, ValFraction: plan.valFraction, Seed: qc.Seed, Shards: plan.shards, Dir: rc.Dir,
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
	classes := datasetClasses(dl)
	files, records, classCounts := summarizeShards(st.Shards, classes, "Tokens")
	out := &Output{JobID: job, Files: files}
	out.Meta = map[string]any{
		"vocab": pal.K, "records": records, "class_counts": classCounts, "classes": classes,
		"val_fraction": plan.valFraction, "resize": qc.Resize,
	}
	return out, nil
}

// TokensVocab is the vocabulary of a quantize output's Tokens records: its
// palette's size, which every record must declare.
func TokensVocab(m *Manifest) (int, error) {
	v, ok := m.Meta["vocab"].(float64)
	if !ok || v < 1 || v > 1<<16 || v != float64(int(v)) {
		return 0, fmt.Errorf("quantize output %s: manifest meta.vocab = %v is not a palette size in 1..65536; delete the folder and rerun quantize", m.Dir, m.Meta["vocab"])
	}
	return int(v), nil
}
