package stages

import (
	"context"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/pipelines"
)

// tokensPerShard sets the default shard count of a token stage: one shard
// per this many records.
const tokensPerShard = 8192

// tokenShardPlan is what quantize and vqvae-encode decide alike before
// their pipeline: the input shards, the val fraction carved from train,
// and the shard count of every output split.
type tokenShardPlan struct {
	inputs      []pipelines.ShardInput
	valFraction float64
	shards      map[string]int
}

// planTokenShards plans a token stage over a download output: valFraction
// of train becomes val unless the dataset has its own val split (or no
// train), and a split without a count in override gets one shard per
// tokensPerShard records.
func planTokenShards(dl *Manifest, valFraction float64, override map[string]int) tokenShardPlan {
	p := tokenShardPlan{valFraction: valFraction, shards: map[string]int{}}
	counts := map[string]int64{}
	for _, f := range dl.Files {
		if f.Split == "" {
			continue
		}
		p.inputs = append(p.inputs, pipelines.ShardInput{Path: dl.Path(f.Name), Split: f.Split})
		counts[f.Split] += f.Records
	}
	if counts["val"] > 0 || counts["train"] == 0 {
		p.valFraction = 0 // the dataset has its own val split, or no train to carve from
	}
	if p.valFraction > 0 {
		carved := int64(float64(counts["train"]) * p.valFraction)
		counts["val"], counts["train"] = carved, counts["train"]-carved
	}
	for split, n := range counts {
		p.shards[split] = override[split]
		if p.shards[split] == 0 {
			p.shards[split] = max(1, int((n+tokensPerShard-1)/tokensPerShard))
		}
	}
	return p
}

// checkTokenParams checks the settings quantize and vqvae-encode share,
// naming the keys under section.
func checkTokenParams(section string, resize []int) error {
	if r := resize; len(r) != 0 && len(r) != 2 {
		return fmt.Errorf("%s.resize must be [height, width], got %v", section, r)
	}
	if r := resize; len(r) == 2 {
		if _, ok := product(MaxResizePixels, r[0], r[1]); !ok {
			return fmt.Errorf("%s.resize %v is %.4g pixels per image (%.3g GB of RGB, and a token sequence as long); at most %d: lower %s.resize",
				section, r, float64(r[0])*float64(r[1]), float64(r[0])*float64(r[1])*3/1e9, MaxResizePixels, section)
		}
	}
	return nil
}

// TokensOutput is what a token stage (quantize or vqvae-encode) records
// beside its Tokens shards (manifest meta).
type TokensOutput struct {
	// Vocab is the palette's size or the codebook's, which every record
	// must declare.
	Vocab       int              `json:"vocab"`
	Classes     []string         `json:"classes"`
	Records     map[string]int64 `json:"records"`
	ValFraction float64          `json:"val_fraction"`
	Resize      []int            `json:"resize"`
}

// ReadTokensOutput reads a quantize or vqvae-encode stage's typed output,
// checking its vocabulary fits uint16 tokens.
func ReadTokensOutput(m *Manifest) (TokensOutput, error) {
	var out TokensOutput
	stage := "quantize"
	if m.Stage == "vqvae-encode" {
		stage = m.Stage
	}
	if err := decodeMeta(m, stage, &out); err != nil {
		return out, err
	}
	if out.Vocab < 1 || out.Vocab > 1<<16 {
		return out, fmt.Errorf("%s output %s: manifest meta.vocab = %v is not a vocabulary size in 1..65536; delete the folder and rerun %s", stage, m.Dir, m.Meta["vocab"], stage)
	}
	return out, nil
}

// runTokenStage runs a token stage's job over plan: it writes the input
// list and has build add the pipeline that reads it; the job's finish step
// describes its output (the stage's Finish, with tokenOutput).
func runTokenStage(ctx context.Context, rc *RunContext, s jobStage, plan tokenShardPlan, state any, build func(s beam.Scope, list string) (beam.PCollection, error)) (*Output, error) {
	list := storage.Join(rc.Dir, InputsName)
	if err := pipelines.WriteLines(ctx, list, plan.inputs); err != nil {
		return nil, err
	}
	return runJob(ctx, rc, s, state, func(sc beam.Scope) (beam.PCollection, error) { return build(sc, list) })
}

// tokenState is what a token stage plans for its job's finish step.
type tokenState struct {
	ValFraction float64 `json:"val_fraction"`
	Vocab       int     `json:"vocab"`
	Factor      int     `json:"factor,omitempty"` // vqvae-encode's VQ-VAE factor
}

// tokenOutput describes what a token stage's job wrote: the shards with
// their class counts and the meta both token stages record (records, class
// counts, classes, val fraction), with the shards' stats.
func tokenOutput(ctx context.Context, rc *RunContext, valFraction float64) (*Output, *pipelines.DownloadStats, error) {
	// The writers read the spilled pieces back; every shard is written now.
	if err := storage.RemoveAll(ctx, storage.Join(rc.Dir, pipelines.TokenPiecesDir)); err != nil {
		return nil, nil, fmt.Errorf("remove the spilled pieces: %w", err)
	}
	st, err := pipelines.ReadDownloadStats(ctx, rc.Dir)
	if err != nil {
		return nil, nil, err
	}
	dlOut, err := ReadDownloadOutput(rc.Inputs["download"])
	if err != nil {
		return nil, nil, err
	}
	files, records, classCounts := summarizeShards(st.Shards, dlOut.Classes, "Tokens")
	out := &Output{Files: files, Meta: map[string]any{
		"records": records, "class_counts": classCounts, "classes": dlOut.Classes, "val_fraction": valFraction,
	}}
	return out, st, nil
}
