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

// tokensPerShard sets the default shard count: one shard per this many
// records.
const tokensPerShard = 8192

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
	var classes []string
	names, _ := dl.Meta["classes"].([]any)
	for _, c := range names {
		classes = append(classes, fmt.Sprint(c))
	}
	files, records, classCounts := summarizeShards(st.Shards, classes, "Tokens")
	out := &Output{JobID: job, Files: files}
	out.Meta = map[string]any{
		"vocab": pal.K, "records": records, "class_counts": classCounts, "classes": classes,
		"val_fraction": valFrac, "resize": qc.Resize,
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
