package stages

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/vqvae"
)

// Limits a config must respect before any stage allocates for it. Each
// error names the config key in YAML terms.
const (
	// MaxResizePixels caps quantize.resize's h·w (the token sequence a
	// model then trains on): 2048×2048, 12 MB of RGB per image.
	MaxResizePixels = 1 << 22
	// MaxScale caps sample.scale and --scale: a 64× magnified 64×64 grid
	// of 8 rows of 8 images is already 32768 pixels wide.
	MaxScale = 64
)

// product multiplies xs, reporting ok false when the product passes
// limit or would overflow int64 (resize: [3037000500, 3037000500] wrapped
// h·w to a negative number that passed a plain int64 comparison).
func product(limit int64, xs ...int) (p int64, ok bool) {
	p = 1
	for _, x := range xs {
		if x < 0 || (x > 0 && p > limit/int64(x)) {
			return 0, false
		}
		p *= int64(x)
	}
	return p, p <= limit
}

// TrainBytes estimates the memory the train stage needs for model mc at
// micro-batch B: parameters, gradients and two Adam moments, plus the
// activations the model's training workspace holds (see model.Reserve).
func TrainBytes(mc model.Config, B int) (params, acts float64) {
	P := float64(mc.NumParams())
	L, C, V, H := float64(mc.Layers), float64(mc.D), float64(mc.Vocab), float64(mc.Heads)
	N := float64(B) * float64(mc.Seq)
	perLayer := N*15*C + 2*N + N*H
	acts = 4 * (L*perLayer + (L+1)*N*C + 2*N*V + 8*N*C + 4*N)
	return 16 * P, acts
}

// machineMemory returns the memory this process may use: the cgroup limit
// if there is one, else MemTotal. ok is false when neither is readable.
// Tests replace it.
var machineMemory = func() (bytes float64, ok bool) {
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if b, err := os.ReadFile(p); err == nil {
			if n, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil && n > 0 && n < 1<<60 {
				return n, true
			}
		}
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024, err == nil
		}
	}
	return 0, false
}

// memTerm is one part of a stage's memory estimate.
type memTerm struct {
	what  string
	bytes float64
}

// checkMemory is the one memory check every stage runs before it
// allocates what its config sizes: it refuses an estimate above this
// machine's memory, naming the stage, the keys and values that size it
// (setting), each part of the estimate, and what to lower (advice).
func checkMemory(stage, setting, advice string, terms ...memTerm) error {
	var total float64
	parts := make([]string, len(terms))
	for i, t := range terms {
		total += t.bytes
		parts[i] = fmt.Sprintf("%.1f GB of %s", t.bytes/1e9, t.what)
	}
	have, ok := machineMemory()
	if !ok || total <= have {
		return nil
	}
	return fmt.Errorf("%s: %s needs about %.1f GB (%s) but this machine has %.1f GB: %s",
		stage, setting, total/1e9, strings.Join(parts, ", "), have/1e9, advice)
}

// checkTrainMemory refuses a model and batch whose training state would
// not fit this machine, naming the keys to change.
func checkTrainMemory(mc model.Config, tc TrainParams) error {
	params, acts := TrainBytes(mc, tc.Batch)
	return checkMemory("train", fmt.Sprintf("model %v (train.model %s) with train.batch %d", mc, tc.Model, tc.Batch),
		"lower train.batch (use train.accum for the same step size) or choose a smaller train.model, train.layers or train.d",
		memTerm{"parameters, gradients and Adam moments", params}, memTerm{"activations", acts + BF16Bytes(mc, tc.Batch, tc.Prec())})
}

// checkFinetuneMemory: fine-tuning trains the whole model at
// finetune.batch, as train does at train.batch.
func checkFinetuneMemory(mc model.Config, fc FinetuneParams) error {
	params, acts := TrainBytes(mc, fc.Batch)
	return checkMemory("finetune", fmt.Sprintf("model %v with finetune.batch %d", mc, fc.Batch), "lower finetune.batch",
		memTerm{"parameters, gradients and Adam moments", params}, memTerm{"activations", acts + BF16Bytes(mc, fc.Batch, fc.Prec())})
}

// BF16Bytes is what a bf16 training step holds beyond TrainBytes' fp32
// activations (0 in fp32; negative when it holds less): the blocks'
// weights in bf16 (12d² per layer), each block's four linear inputs
// (7·N·C) and one output gradient (4·N·C), 2 bytes each, less the fp32
// norm and GELU outputs (6·N·C per block) that bf16 keeps only as copies.
func BF16Bytes(mc model.Config, B int, p model.Precision) float64 {
	if p != model.BF16 {
		return 0
	}
	L, C, N := float64(mc.Layers), float64(mc.D), float64(B)*float64(mc.Seq)
	return 2*(12*C*C*L+7*N*C*L+4*N*C) - 4*6*N*C*L
}

// checkSampleMemory: seqs sequences sampled together hold a key/value
// cache of every layer and their logits; the picture holds images images
// of ph×pw pixels at scale² RGBA pixels each.
func checkSampleMemory(mc model.Config, setting, advice string, seqs, images, ph, pw, scale int) error {
	N, L, C, T, V := float64(seqs), float64(mc.Layers), float64(mc.D), float64(mc.Seq), float64(mc.Vocab)
	cache := 4 * (2*L*N*T*C + N*(9*C+float64(mc.Heads)*T+V) + N*T)
	png := float64(images) * float64(ph) * float64(pw) * float64(scale) * float64(scale) * 4
	return checkMemory("sample", setting, advice, memTerm{"parameters", 4 * float64(mc.NumParams())},
		memTerm{"key/value cache and logits", cache}, memTerm{"picture", png})
}

// checkProbeMemory: each probe.batch of sequences runs the model forward,
// keeping every layer's features; TrainBytes' activations bound it. A
// worker writes one Features shard per layer at once, each with its
// record buffer and, on gs://, its upload chunk (storage.GCSWriteBuffer).
func checkProbeMemory(mc model.Config, pc ProbeParams) error {
	_, acts := TrainBytes(mc, pc.Batch)
	writers := float64(mc.Layers+1) * float64(records.WriterBuffer+storage.GCSWriteBuffer)
	return checkMemory("probe", fmt.Sprintf("model %v with probe.batch %d", mc, pc.Batch), "lower probe.batch",
		memTerm{"parameters", 4 * float64(mc.NumParams())}, memTerm{"activations", acts},
		memTerm{"feature writers' buffers", writers})
}

// checkVQVAEMemory: vqvae-train trains at vqvae.batch and keeps
// vqvae.eval_images beside the train images (an extra term: one byte per
// channel, up to vqvae.max_images); vqvae-encode runs the encoder over
// vqvae_encode.batch images.
func checkVQVAEMemory(stage, setting string, mc vqvae.Config, batch, h, w, evalImages int, train bool, advice string, extra ...memTerm) error {
	params, acts := mc.Bytes(batch, h, w, train)
	return checkMemory(stage, setting, advice, append([]memTerm{{"parameters", params}, {"activations", acts},
		{"images held", 4 * 3 * float64(h) * float64(w) * float64(evalImages+batch)}}, extra...)...)
}
