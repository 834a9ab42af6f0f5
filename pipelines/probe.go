package pipelines

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/loader"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func init() {
	register.DoFn3x1[context.Context, string, func(string, records.Features), error](&ExtractFeaturesFn{})
	register.DoFn4x1[context.Context, string, func(*records.Features) bool, func(string), error](&WriteFeaturesFn{})
	register.Emitter2[string, records.Features]()
	register.Iter1[records.Features]()
	beam.RegisterType(reflectTypeOf[records.Features]())
}

// ProbeConfig is the feature-extraction pipeline's input.
type ProbeConfig struct {
	Inputs []ShardInput // labelled Tokens shards and their splits
	// Weights is a model checkpoint (local or gs://); empty means a model
	// of Config initialised randomly with Seed (the random-init baseline).
	Weights string
	Config  model.Config
	Seed    uint64
	// Objective the model was trained with; a BERT model is run unmasked.
	Objective string
	Batch     int // records per forward pass
	// MaxPerShard caps the records read from each shard (0: all).
	MaxPerShard int
	Dir         string
}

// Probe extracts, for every record of every input shard, the linear-probe
// features of every layer (the mean over positions of the normalised
// hidden state; layer 0 is the embedding) with one batched forward pass per
// Batch records, and writes one Features shard per split and layer,
// sorted by key.
func Probe(s beam.Scope, cfg ProbeConfig) error {
	if len(cfg.Inputs) == 0 {
		return fmt.Errorf("pipelines: probe: no input shards")
	}
	if cfg.Batch <= 0 {
		return fmt.Errorf("pipelines: probe: batch must be positive")
	}
	s = s.Scope("probe")
	var inputs []string
	for _, in := range cfg.Inputs {
		b, _ := json.Marshal(in)
		inputs = append(inputs, string(b))
	}
	paths := beam.Reshuffle(s.Scope("SpreadShards"), beam.CreateList(s.Scope("ListShards"), inputs))
	feats := beam.ParDo(s.Scope("ExtractFeatures"), &ExtractFeaturesFn{
		Weights: cfg.Weights, Config: cfg.Config, Seed: cfg.Seed, Objective: cfg.Objective, Batch: cfg.Batch, MaxPerShard: cfg.MaxPerShard,
	}, paths)
	grouped := beam.GroupByKey(s.Scope("GroupLayers"), feats)
	written := beam.ParDo(s.Scope("WriteFeatures"), &WriteFeaturesFn{Dir: cfg.Dir}, grouped)
	all := beam.GroupByKey(s.Scope("Collect"), beam.AddFixedKey(s, written))
	beam.ParDo0(s.Scope("WriteStats"), &WriteStatsFn{Dir: cfg.Dir}, all)
	return nil
}

// ExtractFeaturesFn runs the model over one Tokens shard in batches and
// emits each record's features at every layer, keyed "split|layer". The
// model is loaded once per DoFn instance, in Setup.
type ExtractFeaturesFn struct {
	Weights     string
	Config      model.Config
	Seed        uint64
	Objective   string
	Batch       int
	MaxPerShard int

	m *model.Model
}

// Setup loads the model.
func (f *ExtractFeaturesFn) Setup(ctx context.Context) error {
	if f.Weights == "" {
		m, err := model.New(f.Config)
		if err != nil {
			return err
		}
		m.Params.Init(f.Seed)
		f.m = m
		return nil
	}
	b, err := storage.ReadFile(ctx, f.Weights)
	if err != nil {
		return fmt.Errorf("probe: load model: %w", err)
	}
	p, _, err := model.LoadCheckpoint(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("probe: load model %s: %w", f.Weights, err)
	}
	if p.Config != f.Config {
		return fmt.Errorf("probe: model %s is %v, want %v", f.Weights, p.Config, f.Config)
	}
	f.m = model.FromParams(p)
	return nil
}

// ProcessElement extracts the features of one shard.
func (f *ExtractFeaturesFn) ProcessElement(ctx context.Context, input string, emit func(string, records.Features)) error {
	var in ShardInput
	if err := json.Unmarshal([]byte(input), &in); err != nil {
		return fmt.Errorf("probe: bad input %q: %w", input, err)
	}
	obj, err := model.ParseObjective(f.Objective)
	if err != nil {
		return err
	}
	T, C, L := f.Config.Seq, f.Config.D, f.Config.Layers
	var batch []records.Tokens
	tok := make([]int32, f.Batch*T)
	feats := make([]float32, (L+1)*f.Batch*C)
	var mask []bool
	flush := func() error {
		B := len(batch)
		if B == 0 {
			return nil
		}
		for b, r := range batch {
			for t, v := range r.Tok {
				tok[b*T+t] = int32(v)
			}
		}
		if obj == model.BERT {
			mask = make([]bool, B*T) // no mask at probe time
		}
		if err := f.m.Probe(tok[:B*T], mask, obj, feats[:(L+1)*B*C]); err != nil {
			return fmt.Errorf("probe: %s: %w", in.Path, err)
		}
		for l := 0; l <= L; l++ {
			for b, r := range batch {
				vec := append([]float32(nil), feats[(l*B+b)*C:(l*B+b+1)*C]...)
				emit(layerKey(in.Split, l), records.Features{Key: r.Key, Label: r.Label, Layer: l, Vec: vec})
			}
		}
		batch = batch[:0]
		return nil
	}
	n := 0
	err = loader.ReadShard(ctx, in.Path, func(r records.Tokens) error {
		if n++; f.MaxPerShard > 0 && n > f.MaxPerShard {
			return io.EOF
		}
		if len(r.Tok) != T || r.Vocab != f.Config.Vocab {
			return fmt.Errorf("probe: %s: record %s has %d tokens of vocabulary %d; the model takes %d of %d", in.Path, r.Key, len(r.Tok), r.Vocab, T, f.Config.Vocab)
		}
		batch = append(batch, r)
		if len(batch) == f.Batch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

func layerKey(split string, layer int) string { return ShardKey(split, layer) }

// FeaturesShardName names the Features shard of one split and layer.
func FeaturesShardName(split string, layer int) string {
	return records.ShardName(fmt.Sprintf("%s-layer%02d", split, layer), 0, 1)
}

// WriteFeaturesFn writes the features of one split and layer, sorted by key.
type WriteFeaturesFn struct{ Dir string }

// ProcessElement writes one Features shard.
func (f *WriteFeaturesFn) ProcessElement(ctx context.Context, key string, iter func(*records.Features) bool, emit func(string)) error {
	split, layer, err := parseShardKey(key)
	if err != nil {
		return err
	}
	var fs []records.Features
	var x records.Features
	for iter(&x) {
		fs = append(fs, x)
		x = records.Features{}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Key < fs[j].Key })
	name := FeaturesShardName(split, layer)
	st, err := writeNamedShard(ctx, f.Dir, name, split, records.KindFeatures, fs, func(x *records.Features) int { return x.Label })
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	b, _ := json.Marshal(statsEvent{Shard: &st})
	emit(string(b))
	return nil
}
