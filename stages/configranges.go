package stages

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Range is the values a numeric config key accepts, bounds included
// unless MinOpen or MaxOpen excludes them. Note says what special values
// mean (0: the default, and so on).
type Range struct {
	Min, Max         float64
	MinOpen, MaxOpen bool
	Note             string
}

// contains reports whether v is in r; NaN never is.
func (r Range) contains(v float64) bool {
	lo := v > r.Min || (!r.MinOpen && v == r.Min)
	hi := v < r.Max || (!r.MaxOpen && v == r.Max)
	return lo && hi
}

// text writes r for a key of kind k: "1..65536" for integers, "(0, 10]"
// for numbers.
func (r Range) text(k reflect.Kind) string {
	if isIntKind(k) {
		lo, hi := r.Min, r.Max
		if r.MinOpen {
			lo++
		}
		if r.MaxOpen {
			hi--
		}
		return numText(lo) + ".." + numText(hi)
	}
	open, shut := "[", "]"
	if r.MinOpen {
		open = "("
	}
	if r.MaxOpen {
		shut = ")"
	}
	return open + numText(r.Min) + ", " + numText(r.Max) + shut
}

func numText(f float64) string {
	if f >= math.MaxUint64 {
		return "18446744073709551615"
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func isIntKind(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// Common bounds of the table below.
const (
	maxSteps   = 1e9     // optimiser steps, evaluation and checkpoint intervals
	maxBatch   = 1 << 16 // sequences or images per batch; memory is checked too
	maxThreads = 1024    // kernel threads (0: all cores)
	maxShards  = 1 << 16 // output shards per split
	maxSide    = 4096    // an image side in pixels
	maxLR      = 10      // a learning rate
	maxRecords = 1e9     // record counts (eval_records, max_train, …)
	maxKeep    = 1000    // checkpoints kept
	maxMapKeys = 64      // entries of a mapping (splits), checked at load
)

var (
	anySeed     = Range{Min: 0, Max: math.MaxUint64, Note: "any 64-bit value"}
	probability = Range{Min: 0, Max: 1}
	lrRange     = Range{Min: 0, Max: maxLR, MinOpen: true}
	stepsRange  = Range{Min: 1, Max: maxSteps}
	batchRange  = Range{Min: 1, Max: maxBatch, Note: "the stage's memory estimate is checked too"}
	threads     = Range{Min: 0, Max: maxThreads, Note: "0: all cores"}
	keepCkpts   = Range{Min: 1, Max: maxKeep}
	shardCount  = Range{Min: 1, Max: maxShards, Note: "per split; splits left out get one per 8192 records"}
	resizeSide  = Range{Min: 1, Max: maxSide, Note: fmt.Sprintf("[height, width]; h·w at most %d", MaxResizePixels)}
)

// configRanges is the range of every numeric config key, by its YAML path;
// a list's or a mapping's entries share their key's range. Every numeric
// field of Config must have a row (TestReliability29_9_EveryNumericKeyHasRange
// walks the types), and docs/config-ranges.md is rendered from it
// (ConfigRangesDoc). The ranges are checked at load, after the defaults
// are filled, so a key whose 0 means "the default" never holds 0 there
// unless 0 is itself a setting the Note describes.
var configRanges = map[string]Range{
	"dataset.image_size": {Min: 1, Max: maxSide, Note: "[height, width] every folder image must have"},
	"dataset.channels":   {Min: 0, Max: 3, Note: "1 or 3; 0: the source's own"},

	"download.shard_mib": {Min: 0, Max: 4096, Note: "0: the default, 128"},
	"download.resize":    {Min: 0, Max: maxSide, Note: "0: no resize"},
	"download.shards":    {Min: 0, Max: maxShards, Note: "no longer used: set download.shard_mib"},

	"palette.k":        {Min: 2, Max: 65536, Note: "tokens are uint16"},
	"palette.seed":     anySeed,
	"palette.max_iter": {Min: 1, Max: 1e6},
	"palette.tol":      {Min: 0, Max: 1},

	"quantize.resize":       resizeSide,
	"quantize.val_fraction": {Min: 0, Max: 1, MaxOpen: true, Note: "0 keeps train whole"},
	"quantize.seed":         anySeed,
	"quantize.shards":       shardCount,

	"train.layers":           {Min: 0, Max: 1024, Note: "0: the preset's"},
	"train.d":                {Min: 0, Max: 1 << 16, Note: "0: the preset's"},
	"train.heads":            {Min: 0, Max: 1024, Note: "0: the preset's"},
	"train.bert_mask_prob":   {Min: 0, Max: 1, MinOpen: true, MaxOpen: true},
	"train.batch":            batchRange,
	"train.accum":            {Min: 1, Max: maxBatch},
	"train.steps":            stepsRange,
	"train.warmup_steps":     {Min: 0, Max: maxSteps, Note: "at most train.steps"},
	"train.lr":               lrRange,
	"train.weight_decay":     {Min: 0, Max: 10},
	"train.clip":             {Min: 0, Max: 1e6, Note: "0: no clipping"},
	"train.eval_every":       stepsRange,
	"train.eval_records":     {Min: 1, Max: maxRecords},
	"train.checkpoint_every": stepsRange,
	"train.keep_checkpoints": keepCkpts,
	"train.hflip":            probability,
	"train.seed":             anySeed,
	"train.shuffle_buffer":   {Min: 1, Max: 1024, Note: "shards shuffled together"},
	"train.threads":          threads,

	"probe.batch":            batchRange,
	"probe.l2":               {Min: 0, Max: 1e6, MinOpen: true},
	"probe.max_iter":         {Min: 0, Max: 1e6, Note: "0: the default"},
	"probe.patience":         {Min: 0, Max: 1e6},
	"probe.max_train":        {Min: 0, Max: maxRecords, Note: "0: all"},
	"probe.max_per_shard":    {Min: 0, Max: maxRecords, Note: "0: all"},
	"probe.max_eval":         {Min: 0, Max: maxRecords, Note: "val and test each; 0: all"},
	"probe.seed":             anySeed,
	"probe.labels_per_class": {Min: 1, Max: 1e6},
	"probe.low_data_draws":   {Min: 0, Max: 1000, Note: "0: the default"},
	"probe.concat":           {Min: 0, Max: 1024, Note: "layers; 0: the embedding"},
	"probe.pool_grid":        {Min: 0, Max: 16, Note: "regions per side; 0 or 1: the mean over all positions"},

	"sample.unconditional": {Min: 0, Max: 4096, Note: "also igpt sample --n"},
	"sample.images":        {Min: 0, Max: 1024},
	"sample.completions":   {Min: 0, Max: 256},
	"sample.keep":          {Min: 0, Max: 1, MinOpen: true, MaxOpen: true, Note: "also --keep"},
	"sample.temperature":   {Min: 0, Max: 100, MinOpen: true, Note: "also --temperature"},
	"sample.top_k":         {Min: 0, Max: 65536, Note: "0: all tokens; also --top_k"},
	"sample.top_p":         {Min: 0, Max: 1, Note: "0: off; also --top_p"},
	"sample.seed":          anySeed,
	"sample.scale":         {Min: 1, Max: MaxScale, Note: "also --scale"},

	"vqvae.hidden":           {Min: 2, Max: 4096, Note: "even"},
	"vqvae.res_hidden":       {Min: 1, Max: 4096},
	"vqvae.res_blocks":       {Min: 0, Max: 64},
	"vqvae.codes":            {Min: 1, Max: 65535, Note: "codes are uint16 tokens"},
	"vqvae.code_dim":         {Min: 1, Max: 4096},
	"vqvae.factor":           {Min: 2, Max: 64, Note: "a power of two"},
	"vqvae.beta":             {Min: 0, Max: 100},
	"vqvae.decay":            {Min: 0, Max: 1, MinOpen: true, MaxOpen: true},
	"vqvae.epsilon":          {Min: 0, Max: 1, MinOpen: true},
	"vqvae.dead_after":       {Min: 0, Max: maxSteps, Note: "0: never restart a code"},
	"vqvae.batch":            batchRange,
	"vqvae.steps":            stepsRange,
	"vqvae.lr":               lrRange,
	"vqvae.seed":             anySeed,
	"vqvae.eval_every":       stepsRange,
	"vqvae.eval_images":      {Min: 1, Max: 1e6},
	"vqvae.max_images":       {Min: 0, Max: maxRecords, Note: "train images held; 0: all"},
	"vqvae.val_fraction":     {Min: 0, Max: 1, MaxOpen: true, Note: "held out of training for the evaluations; 0: evaluate on the download's val split only"},
	"vqvae.checkpoint_every": stepsRange,
	"vqvae.keep_checkpoints": keepCkpts,
	"vqvae.threads":          threads,

	"vqvae_encode.resize":       resizeSide,
	"vqvae_encode.batch":        batchRange,
	"vqvae_encode.val_fraction": {Min: 0, Max: 1, MaxOpen: true, Note: "0 keeps train whole"},
	"vqvae_encode.seed":         anySeed,
	"vqvae_encode.shards":       shardCount,

	"finetune.gen_weight":       {Min: 0, Max: 1000, Note: "0: classification only"},
	"finetune.batch":            batchRange,
	"finetune.steps":            stepsRange,
	"finetune.max_minutes":      {Min: 0, Max: 1e7, Note: "0: no cap"},
	"finetune.lr":               lrRange,
	"finetune.warmup_steps":     {Min: 0, Max: maxSteps, Note: "at most finetune.steps"},
	"finetune.weight_decay":     {Min: 0, Max: 10},
	"finetune.clip":             {Min: 0, Max: 1e6},
	"finetune.eval_every":       stepsRange,
	"finetune.eval_records":     {Min: 0, Max: maxRecords, Note: "0: all"},
	"finetune.patience":         {Min: 0, Max: 1e6, Note: "0: never stop early"},
	"finetune.pad":              {Min: 0, Max: 64, Note: "tokens; 0: no crop"},
	"finetune.hflip":            probability,
	"finetune.checkpoint_every": stepsRange,
	"finetune.keep_checkpoints": keepCkpts,
	"finetune.seed":             anySeed,
	"finetune.shuffle_buffer":   {Min: 1, Max: 1024, Note: "shards shuffled together"},
	"finetune.threads":          threads,
}

// Choice is the values a string config key accepts, for the keys whose
// values are a fixed set; left out ("") it takes Default.
type Choice struct {
	Values  []string
	Default string
	Note    string
}

// precisionChoice is train.precision's and finetune.precision's set.
var precisionChoice = Choice{Values: []string{"fp32", "bf16", "auto"}, Default: "fp32",
	Note: "bf16 needs a CPU with AVX512_BF16; refused at load without it; auto is bf16 where the CPU has it, else fp32 (resolved at load, the key holds the result)"}

// configChoices lists the string keys checked against a fixed set of
// values by checkValues (and rendered into docs/config-ranges.md); their
// sections' checks add what depends on the machine or on other keys.
var configChoices = map[string]Choice{
	"train.precision":    precisionChoice,
	"finetune.precision": precisionChoice,
}

// checkValues walks every value of the config once: NaN and ±Inf are
// refused (YAML accepts .nan and .inf, JSON, the stage key, cannot encode
// them), and every number must lie in its key's range. Errors name the key
// as the YAML does ("train.steps is -1: want 1..1000000000").
func (c *Config) checkValues() error {
	return checkValue(reflect.ValueOf(c).Elem(), "", "")
}

// checkValue checks v, written at key (train.lr, quantize.resize[1],
// quantize.shards.train), whose range is configRanges[table].
func checkValue(v reflect.Value, key, table string) error {
	switch k := v.Kind(); {
	case k == reflect.Float32 || k == reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%s is %v: give a finite number", key, f)
		}
		return inRange(key, table, f, strconv.FormatFloat(f, 'g', -1, 64), k)
	case k >= reflect.Int && k <= reflect.Int64:
		return inRange(key, table, float64(v.Int()), strconv.FormatInt(v.Int(), 10), k)
	case k >= reflect.Uint && k <= reflect.Uint64:
		return inRange(key, table, float64(v.Uint()), strconv.FormatUint(v.Uint(), 10), k)
	case k == reflect.String:
		if c, ok := configChoices[table]; ok && v.String() != "" && !slices.Contains(c.Values, v.String()) {
			return fmt.Errorf("%s is %q: want one of %s (docs/config-ranges.md)", key, v.String(), strings.Join(c.Values, ", "))
		}
	case k == reflect.Pointer || k == reflect.Interface:
		if !v.IsNil() {
			return checkValue(v.Elem(), key, table)
		}
	case k == reflect.Slice || k == reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if err := checkValue(v.Index(i), fmt.Sprintf("%s[%d]", key, i), table); err != nil {
				return err
			}
		}
	case k == reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, mk := range keys {
			if err := checkValue(v.MapIndex(mk), fmt.Sprintf("%s.%v", key, mk), table); err != nil {
				return err
			}
		}
	case k == reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			name, ok := yamlName(t.Field(i))
			if !ok {
				continue
			}
			if err := checkValue(v.Field(i), joinKey(key, name), joinKey(table, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// inRange checks the number f (written s) at key against its range.
func inRange(key, table string, f float64, s string, k reflect.Kind) error {
	r, ok := configRanges[table]
	if !ok {
		return fmt.Errorf("%s is %s: igpt has no range for %s (a bug: add it to configRanges in stages/configranges.go)", key, s, table)
	}
	if r.contains(f) {
		return nil
	}
	note := ""
	if r.Note != "" {
		note = " (" + r.Note + ")"
	}
	return fmt.Errorf("%s is %s: want %s%s; change %s (docs/config-ranges.md lists every key's range)", key, s, r.text(k), note, table)
}

// CheckValue checks a number given outside a config file, as text (a
// command-line flag such as igpt sample --n), against the range of the
// config key it stands for, naming flag in the error.
func CheckValue(flag, key, value string) error {
	r, ok := configRanges[key]
	if !ok {
		return fmt.Errorf("%s: igpt has no range for %s (a bug: add it to configRanges)", flag, key)
	}
	f, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return fmt.Errorf("%s is %q: want a number", flag, value)
	}
	if !r.contains(f) {
		kind := reflect.Float64
		for _, nk := range numericKeys(reflect.TypeOf(Config{}), "", "number") {
			if nk.Key == key {
				kind = nk.Kind
			}
		}
		return fmt.Errorf("%s is %s: want %s (the range of %s; docs/config-ranges.md)", flag, value, r.text(kind), key)
	}
	return nil
}

// yamlName is a struct field's YAML key; ok is false for fields YAML
// skips.
func yamlName(f reflect.StructField) (name string, ok bool) {
	name, _, _ = strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" {
		return "", false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, true
}

// NumericKey is a numeric config key found by walking the config's types:
// its YAML path, its Go kind and its shape (a number, a list or a mapping
// of numbers).
type NumericKey struct {
	Key   string
	Kind  reflect.Kind
	Shape string // "number", "list" or "mapping"
}

// numericKeys walks type t (Config) and returns every numeric key, in the
// order the fields are declared.
func numericKeys(t reflect.Type, path, shape string) []NumericKey {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch k := t.Kind(); {
	case k == reflect.Float32 || k == reflect.Float64 || isIntKind(k):
		return []NumericKey{{Key: path, Kind: k, Shape: shape}}
	case k == reflect.Slice || k == reflect.Array:
		return numericKeys(t.Elem(), path, "list")
	case k == reflect.Map:
		return numericKeys(t.Elem(), path, "mapping")
	case k == reflect.Struct:
		var out []NumericKey
		for i := 0; i < t.NumField(); i++ {
			if name, ok := yamlName(t.Field(i)); ok {
				out = append(out, numericKeys(t.Field(i).Type, joinKey(path, name), shape)...)
			}
		}
		return out
	}
	return nil
}

// ConfigRangesDoc renders docs/config-ranges.md: every numeric key of the
// config with its range, from configRanges and the config's types.
func ConfigRangesDoc() string {
	var b strings.Builder
	b.WriteString("# Config ranges\n\n" +
		"Every numeric key of a config and the values it accepts, checked when the config is loaded (before\n" +
		"any stage runs, `--dry_run` included); an error names the key, its value and its range. Integer\n" +
		"ranges include both ends; `(` and `)` exclude an end of a number's range. A list's or a mapping's\n" +
		"entries each take the key's range. Besides the ranges, `quantize.resize` and `vqvae_encode.resize`\n" +
		fmt.Sprintf("must have h·w ≤ %d, a mapping at most %d entries, and train, vqvae-train, vqvae-encode,\n", MaxResizePixels, maxMapKeys) +
		"finetune, sample and probe estimate their memory from these keys and refuse what would not fit.\n\n" +
		"Generated from `configRanges` in `stages/configranges.go` by `ConfigRangesDoc`; regenerate with\n" +
		"`IGPT_WRITE_DOCS=1 go test -run TestReliability29_9_ConfigRangesDoc ./stages/`.\n\n" +
		"| key | kind | range | note |\n|---|---|---|---|\n")
	for _, nk := range numericKeys(reflect.TypeOf(Config{}), "", "number") {
		r := configRanges[nk.Key]
		kind := "number"
		if isIntKind(nk.Kind) {
			kind = "integer"
		}
		if nk.Shape != "number" {
			kind = nk.Shape + " of " + kind + "s"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", nk.Key, kind, r.text(nk.Kind), r.Note)
	}
	b.WriteString("\n## Keys with a fixed set of values\n\n" +
		"Checked at load as the numbers are (`configChoices` in the same file).\n\n" +
		"| key | values | default | note |\n|---|---|---|---|\n")
	keys := make([]string, 0, len(configChoices))
	for k := range configChoices {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := configChoices[k]
		fmt.Fprintf(&b, "| `%s` | `%s` | `%s` | %s |\n", k, strings.Join(c.Values, "`, `"), c.Default, c.Note)
	}
	return b.String()
}
