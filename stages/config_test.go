package stages

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseConfigErrors: every bad value is refused at load time (before
// any stage runs, so --dry_run sees it), naming the key as the YAML writes
// it, suggesting the key meant for a slip, and never a Go type name.
func TestParseConfigErrors(t *testing.T) {
	const ds = "dataset: {name: cifar10}\n"
	tests := []struct{ yaml, want string }{
		{ds + "downlaod: {}\n", "downlaod (line 2): unknown key; did you mean download?"},
		{ds + "train: {stpes: 10}\n", "train.stpes (line 2): unknown key; did you mean train.steps?"},
		{ds + "train: {model: tiny}\n", `train.model is "tiny": use one of L, M, S, XL, micro, nano`},
		{ds + "train: {model: mirco}\n", "did you mean micro?"},
		{ds + "train: {layers: -2}\n", "train.layers is -2"},
		{ds + "train: {d: 100, heads: 3}\n", "train.heads 3 does not divide train.d 100"},
		{ds + "train: {steps: many}\n", `train.steps (line 2): want an integer, got "many"`},
		{ds + "train: 5\n", `train (line 2): want a mapping of keys (accum, batch`},
		{ds + "probe: {l2: 0.1}\n", "probe.l2 (line 2): want a list of numbers"},
		{ds + "train: {keep_checkpoints: -1}\n", "train.keep_checkpoints is -1"},
		{ds + "quantize: {resize: [100000, 100000]}\n", "lower quantize.resize"},
		{ds + "sample: {scale: 1000}\n", "sample.scale is 1000"},
		{ds + "palette: {k: 1}\n", "palette.k must be in 2..65536"},
		{"dataset: {}\n", "dataset.name is required"},
		{"", "dataset.name is required"},
		{"dataset: {name: folder}\n", "dataset.source is required"},
		{"dataset: {name: folder, source: x, image_size: [32]}\n", "dataset.image_size"},
		{"dataset: {name: folder, source: x, on_bad_image: ignore}\n", `dataset.on_bad_image "ignore": use "fail" or "skip"`},
		{"dataset: {name: folder, source: x, channels: 2}\n", "dataset.channels 2"},
		{"dataset: {name: cifar100, cifar100_label: medium}\n", `dataset.cifar100_label "medium"`},
		{ds + "download: {shards: {train: 2}}\n", "download.shards is no longer used"},
		{ds + "download: {shard_mib: -1}\n", "download.shard_mib"},
		{ds + "download: {resize: 100000}\n", "download.resize"},
	}
	for _, tc := range tests {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v, want error containing %q", tc.yaml, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "stages.") {
			t.Errorf("ParseConfig(%q) = %v: names a Go type", tc.yaml, err)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	known := []string{"steps", "warmup_steps", "batch", "lr"}
	for _, tc := range []struct{ got, want string }{
		{"stpes", "; did you mean steps?"},
		{"step", "; did you mean steps?"},
		{"warmupsteps", "; did you mean warmup_steps?"},
		{"Batch", "; did you mean batch?"},
		{"colour", ""},
	} {
		if got := didYouMean(tc.got, known); got != tc.want {
			t.Errorf("didYouMean(%q) = %q, want %q", tc.got, got, tc.want)
		}
	}
}

// TestManifestUpstream: a stage folder finds its inputs under its root;
// a folder whose names disagree with its manifest (copied or renamed) is
// refused naming the layout, as is an input it does not have.
func TestManifestUpstream(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	write := func(dir string, m *Manifest) {
		m.Dir = dir
		if err := writeManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "palette", "aaaaaaaaaaaa"), &Manifest{Stage: "palette", Key: "aaaaaaaaaaaa"})
	q := &Manifest{Stage: "quantize", Key: "cccccccccccc", Inputs: []Input{{Stage: "palette", Key: "aaaaaaaaaaaa"}}}
	write(filepath.Join(root, "quantize", "cccccccccccc"), q)
	copied := filepath.Join(t.TempDir(), "my-quantize")
	write(copied, &Manifest{Stage: "quantize", Key: "cccccccccccc", Inputs: q.Inputs})
	for _, tc := range []struct {
		dir, stage, want string
	}{
		{filepath.Join(root, "quantize", "cccccccccccc"), "palette", ""},
		{filepath.Join(root, "quantize", "cccccccccccc") + "/", "palette", ""},
		{filepath.Join(root, "quantize", "cccccccccccc"), "download", "has no download input"},
		{copied, "palette", "stage folders are ROOT/quantize/cccccccccccc"},
	} {
		m, err := ReadManifest(ctx, tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		up, err := m.Upstream(ctx, tc.stage)
		switch {
		case tc.want == "" && (err != nil || up.Stage != tc.stage || up.Key != "aaaaaaaaaaaa"):
			t.Errorf("%s → %s: %v, %v", tc.dir, tc.stage, up, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s → %s: %v, want an error containing %q", tc.dir, tc.stage, err, tc.want)
		}
	}
}
