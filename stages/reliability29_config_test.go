package stages

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestReliability29_9_EveryNumericKeyHasRange walks every numeric field of
// the config types: a new key without a row in configRanges fails here,
// and so does a row for a key that no longer exists.
func TestReliability29_9_EveryNumericKeyHasRange(t *testing.T) {
	walked := map[string]bool{}
	for _, nk := range numericKeys(reflect.TypeOf(Config{}), "", "number") {
		walked[nk.Key] = true
		if _, ok := configRanges[nk.Key]; !ok {
			t.Errorf("%s (%v, %s) has no range: add a row to configRanges in stages/configranges.go", nk.Key, nk.Kind, nk.Shape)
		}
	}
	for k := range configRanges {
		if !walked[k] {
			t.Errorf("configRanges has a row for %s, which is not a numeric key of the config", k)
		}
	}
	if len(walked) < 90 {
		t.Errorf("the walk found %d numeric keys; it misses some", len(walked))
	}
}

// yamlFor writes a config setting the numeric key nk to v, in its shape
// (a list of two for resize, a mapping {train: v}), beside dataset.name.
func yamlFor(t *testing.T, nk NumericKey, v any) string {
	t.Helper()
	var val any = v
	switch nk.Shape {
	case "list":
		val = []any{v, v}
	case "mapping":
		val = map[string]any{"train": v}
	}
	doc := map[string]any{"dataset": map[string]any{"name": "cifar10"}}
	parts := strings.Split(nk.Key, ".")
	m := doc
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = val
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReliability29_9_ConfigRanges sets every numeric key in turn to -1,
// to 2^63-1 and to the largest float64: each value outside the key's range
// is refused at load with the key named on the first line. The shipped
// configs all still load.
func TestReliability29_9_ConfigRanges(t *testing.T) {
	values := []struct {
		v any
		f float64
	}{{-1, -1}, {int64(math.MaxInt64), math.MaxInt64}, {math.MaxFloat64, math.MaxFloat64}}
	refused := 0
	for _, nk := range numericKeys(reflect.TypeOf(Config{}), "", "number") {
		for _, val := range values {
			if configRanges[nk.Key].contains(val.f) {
				continue // a seed takes any uint64 below 2^64
			}
			y := yamlFor(t, nk, val.v)
			_, err := ParseConfig([]byte(y))
			if err == nil {
				t.Errorf("%s = %v accepted at load; want it refused naming %s\n%s", nk.Key, val.v, nk.Key, y)
				continue
			}
			if first := strings.SplitN(err.Error(), "\n", 2)[0]; !strings.HasPrefix(first, nk.Key) {
				t.Errorf("%s = %v: %q does not begin with the key", nk.Key, val.v, first)
			}
			refused++
		}
	}
	t.Logf("%d out-of-range values refused at load", refused)
	// The cases, each named by its key and its range.
	for _, tc := range []struct{ yaml, want string }{
		{"vqvae: {hidden: 1000000}", "vqvae.hidden is 1000000: want 2..4096"},
		{"vqvae: {batch: 100000000}", "vqvae.batch is 100000000: want 1..65536"},
		{"vqvae: {codes: 65535, code_dim: 1000000}", "vqvae.code_dim is 1000000: want 1..4096"},
		{"vqvae: {res_blocks: 10000000}", "vqvae.res_blocks is 10000000: want 0..64"},
		{"finetune: {batch: 100000000}", "finetune.batch is 100000000: want 1..65536"},
		{"train: {threads: 9223372036854775807}", "train.threads is 9223372036854775807: want 0..1024"},
		{"sample: {unconditional: 9223372036854775807}", "sample.unconditional is 9223372036854775807: want 0..4096"},
		{"probe: {batch: 9223372036854775807}", "probe.batch is 9223372036854775807: want 1..65536"},
		{"quantize: {shards: {train: 9223372036854775807}}", "quantize.shards.train is 9223372036854775807: want 1..65536"},
		{"train: {lr: .nan}", "train.lr is NaN: give a finite number"},
	} {
		assertConfigError(t, tc.yaml, tc.want)
	}
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped configs: %v", err)
	}
	for _, f := range files {
		if _, err := LoadConfig(f); err != nil {
			t.Errorf("shipped %s: %v", f, err)
		}
	}
}

// TestReliability29_9_ResizeOverflow: h·w of a resize is computed without
// wrapping. [3037000500, 3037000500] squared passes 2^63 and wrapped to a
// negative product that passed the size check; each side alone is also
// refused by its range, and sides in range whose product is too large are
// refused by the product check.
func TestReliability29_9_ResizeOverflow(t *testing.T) {
	for _, tc := range []struct {
		sides []int
		limit int64
		ok    bool
	}{
		{[]int{3037000500, 3037000500}, MaxResizePixels, false},
		{[]int{3037000500, 3037000500}, math.MaxInt64, false},
		{[]int{1 << 32, 1 << 32}, math.MaxInt64, false},
		{[]int{4096, 4096}, MaxResizePixels, false},
		{[]int{-2048, -2048}, MaxResizePixels, false},
		{[]int{2048, 2048}, MaxResizePixels, true},
		{[]int{32, 32, 3}, 3072, true},
	} {
		if _, ok := product(tc.limit, tc.sides...); ok != tc.ok {
			t.Errorf("product(%d, %v) ok = %v, want %v", tc.limit, tc.sides, ok, tc.ok)
		}
	}
	for _, section := range []string{"quantize", "vqvae_encode"} {
		assertConfigError(t, section+": {resize: [3037000500, 3037000500]}", section+".resize[0] is 3037000500: want 1..4096")
		assertConfigError(t, section+": {resize: [4096, 4096]}", section+".resize [4096 4096] is 1.678e+07 pixels")
	}
}

// TestReliability29_12_ConfigSizeCaps: a config too large, a mapping of
// too many keys and a key written twice are refused at load in linear
// time, naming the key (yaml.v3 compares every pair of a mapping's keys:
// 300,000 shard keys took minutes, igpt status included).
func TestReliability29_12_ConfigSizeCaps(t *testing.T) {
	var many strings.Builder
	many.WriteString("dataset: {name: cifar10}\nquantize:\n  shards:\n")
	for i := range 300_000 {
		fmt.Fprintf(&many, "    s%d: 1\n", i)
	}
	var shards strings.Builder
	for i := range maxMapKeys + 1 {
		fmt.Fprintf(&shards, "s%d: 1, ", i)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"3 MB", many.String(), "the config is "},
		{"65 shard keys", "dataset: {name: cifar10}\nquantize: {shards: {" + shards.String() + "}}", "quantize.shards (line 2): 65 keys, at most 64"},
		{"65 split sources", "dataset: {name: cifar10, splits: {" + strings.ReplaceAll(shards.String(), ": 1", ": x") + "}}", "dataset.splits (line 1): 65 keys, at most 64"},
		{"key twice", "dataset: {name: cifar10}\ntrain:\n  steps: 5\n  steps: 6\n", "train.steps (line 4): written twice (first at line 3)"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error starting with %q", tc.name, err, tc.want)
		}
	}
	// LoadConfig reads no more than the cap of a file larger than it.
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(many.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the config is %d bytes: at most %d", MaxConfigBytes+1, MaxConfigBytes)) {
		t.Errorf("LoadConfig of %d bytes: %v", many.Len(), err)
	}
}

// TestReliability29_13_MultiDocument: a second YAML document was silently
// ignored (its root: /etc never applied); it is refused. A value outside
// its range that no check read (finetune.shuffle_buffer: -1) is refused.
func TestReliability29_13_MultiDocument(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"dataset: {name: cifar10}\n---\nroot: /etc\n", "the config holds a second YAML document (from line 2): igpt reads one document"},
		{"dataset: {name: cifar10}\n---\n", "the config holds a second YAML document"},
		{"dataset: {name: cifar10}\n---\n: : [\n", "the config holds a second YAML document"},
		{"dataset: {name: cifar10}\nfinetune: {shuffle_buffer: -1}\n", "finetune.shuffle_buffer is -1: want 1..1024"},
		{"dataset: {name: cifar10}\ntrain: {shuffle_buffer: -1}\n", "train.shuffle_buffer is -1: want 1..1024"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error starting with %q", tc.yaml, err, tc.want)
		}
	}
	// One document, with or without a leading ---, still loads.
	for _, y := range []string{"dataset: {name: cifar10}\n", "---\ndataset: {name: cifar10}\n", "---\ndataset: {name: cifar10}\n...\n"} {
		if _, err := ParseConfig([]byte(y)); err != nil {
			t.Errorf("%q: %v", y, err)
		}
	}
}

// TestReliability29_9_ConfigRangesDoc: docs/config-ranges.md is the table
// ConfigRangesDoc renders from configRanges.
func TestReliability29_9_ConfigRangesDoc(t *testing.T) {
	const path = "../docs/config-ranges.md"
	want := ConfigRangesDoc()
	if os.Getenv("IGPT_WRITE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: generate it with IGPT_WRITE_DOCS=1 go test -run TestReliability29_9_ConfigRangesDoc ./stages/", err)
	}
	if string(got) != want {
		t.Errorf("%s differs from ConfigRangesDoc(); regenerate it with IGPT_WRITE_DOCS=1 go test -run TestReliability29_9_ConfigRangesDoc ./stages/", path)
	}
	for _, nk := range numericKeys(reflect.TypeOf(Config{}), "", "number") {
		if !strings.Contains(want, "| `"+nk.Key+"` |") {
			t.Errorf("the doc has no row for %s", nk.Key)
		}
	}
}

// TestReliability29_9_StageMemory: each stage that sizes memory from its
// config (finetune, probe, sample, vqvae-train, vqvae-encode; train in
// TestReliability9_ConfigMemoryLimits) estimates it before allocating and
// refuses what passes the machine's memory, naming the keys and the
// estimate against the cap; the shipped defaults fit a 23 GB machine.
func TestReliability29_9_StageMemory(t *testing.T) {
	defer func(f func() (float64, bool)) { machineMemory = f }(machineMemory)
	machineMemory = func() (float64, bool) { return 23e9, true }
	mc, err := ModelConfig(TrainParams{Model: "nano"}, 1024, 512)
	if err != nil {
		t.Fatal(err)
	}
	vq := VQVAEParams{DeadAfter: new(int)}
	vq.fillDefaults()
	big := vq
	big.Hidden, big.Codes, big.CodeDim = 4096, 65535, 4096
	for _, tc := range []struct {
		name  string
		check func() error
		want  string // "" when it fits
	}{
		{"finetune.batch", func() error { return checkFinetuneMemory(mc, FinetuneParams{Batch: 1 << 16}) }, "finetune: model L4 d128 H4 T1024 V512 with finetune.batch 65536 needs about"},
		{"finetune default", func() error { return checkFinetuneMemory(mc, FinetuneParams{Batch: 32}) }, ""},
		{"probe.batch", func() error { return checkProbeMemory(mc, ProbeParams{Batch: 1 << 16}) }, "probe: model L4 d128 H4 T1024 V512 with probe.batch 65536 needs about"},
		{"probe default", func() error { return checkProbeMemory(mc, ProbeParams{Batch: 64}) }, ""},
		{"sample.unconditional", func() error {
			return checkSampleMemory(mc, "sample.unconditional 4096", "lower it", 4096, 4096, 32, 32, MaxScale)
		}, "sample: sample.unconditional 4096 needs about"},
		{"sample default", func() error { return checkSampleMemory(mc, "sample.unconditional 16", "", 16, 16, 32, 32, 4) }, ""},
		{"vqvae.hidden/codes", func() error {
			return checkVQVAEMemory("vqvae-train", "vqvae.batch 4096", big.Model(), 4096, 32, 32, 1000, true, "lower vqvae.batch")
		}, "vqvae-train: vqvae.batch 4096 needs about"},
		{"vqvae default", func() error { return checkVQVAEMemory("vqvae-train", "", vq.Model(), 32, 32, 32, 1000, true, "") }, ""},
		{"vqvae_encode.resize", func() error {
			return checkVQVAEMemory("vqvae-encode", "vqvae_encode.batch 32 at vqvae_encode.resize [2048 2048]", vq.Model(), 32, 2048, 2048, 0, false, "")
		}, "vqvae-encode: vqvae_encode.batch 32 at vqvae_encode.resize [2048 2048] needs about"},
		{"vqvae_encode default", func() error { return checkVQVAEMemory("vqvae-encode", "", vq.Model(), 32, 32, 32, 0, false, "") }, ""},
	} {
		err := tc.check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want it to fit 23 GB", tc.name, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), "but this machine has 23.0 GB")):
			t.Errorf("%s: %v, want an error starting with %q and naming the 23.0 GB cap", tc.name, err, tc.want)
		}
	}
}
