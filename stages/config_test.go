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
		{ds + "quantize: {resize: [100000, 100000]}\n", "quantize.resize[0] is 100000: want 1..4096"},
		{ds + "sample: {scale: 1000}\n", "sample.scale is 1000"},
		{ds + "palette: {k: 1}\n", "palette.k is 1: want 2..65536"},
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

// TestDefaultsWrittenOutKeepKeys: a config that writes out every
// documented default (the README's table) has the same stage keys as one
// that leaves them out, so spelling a default never reruns a stage.
func TestDefaultsWrittenOutKeepKeys(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct{ name, base, defaults string }{
		{"folder", "dataset: {name: folder, source: x.tar}\n", `
dataset: {name: folder, source: x.tar, channels: 3, on_bad_image: fail}
download: {shard_mib: 128}
palette: {k: 512, seed: 0, max_iter: 1000, tol: 1.0e-5, split: train}
quantize: {val_fraction: 0.1, seed: 0}
train: {model: nano, objective: ar, bert_mask_prob: 0.15, batch: 8, accum: 1, steps: 1000, warmup_steps: 50, lr: 0.003,
  weight_decay: 0, clip: 0, eval_every: 100, eval_records: 256, checkpoint_every: 200, keep_checkpoints: 2, hflip: 0, seed: 0, shuffle_buffer: 2}
probe: {batch: 64, l2: [0.1, 0.01, 0.001, 0.0001, 0.00001], max_iter: 1000, patience: 0, baselines: true, seed: 0, low_data_draws: 5, raw_pixels: original}
sample: {unconditional: 16, images: 8, completions: 4, keep: 0.5, temperature: 1, top_k: 0, top_p: 0, seed: 0, scale: 4}
vqvae: {hidden: 128, res_hidden: 32, res_blocks: 2, codes: 512, code_dim: 64, factor: 4, beta: 0.25, decay: 0.99, epsilon: 1.0e-5,
  dead_after: 100, batch: 32, steps: 1000, lr: 0.0003, seed: 0, eval_every: 100, eval_images: 1000, checkpoint_every: 200, keep_checkpoints: 2}
vqvae_encode: {val_fraction: 0.1, seed: 0}
finetune: {init: pretrained, gen_weight: 1, batch: 32, steps: 2000, lr: 0.0003, warmup_steps: 40, weight_decay: 0, clip: 1,
  eval_every: 200, eval_records: 2000, patience: 0, hflip: 0.5, checkpoint_every: 200, keep_checkpoints: 2, seed: 0, shuffle_buffer: 2}
`},
		{"cifar100", "dataset: {name: cifar100}\n", "dataset: {name: cifar100, cifar100_label: fine, on_bad_image: fail}\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			plain, err := ParseConfig([]byte("root: " + root + "\n" + c.base))
			if err != nil {
				t.Fatal(err)
			}
			spelt, err := ParseConfig([]byte("root: " + root + "\n" + c.defaults))
			if err != nil {
				t.Fatal(err)
			}
			want, got := keys(t, plain, registry), keys(t, spelt, registry)
			for st, k := range want {
				if got[st] != k {
					t.Errorf("%s: key %s with the defaults written out, %s without", st, got[st], k)
				}
			}
		})
	}
}
