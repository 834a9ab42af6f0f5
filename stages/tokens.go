package stages

import (
	"encoding/json"
	"fmt"

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

// datasetClasses returns the class names a download output records.
func datasetClasses(dl *Manifest) []string {
	var classes []string
	names, _ := dl.Meta["classes"].([]any)
	for _, c := range names {
		classes = append(classes, fmt.Sprint(c))
	}
	return classes
}

// remarshal decodes a manifest's generic JSON value into a typed one.
func remarshal(v any, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}
