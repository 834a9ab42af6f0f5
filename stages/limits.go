package stages

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/igpt/igpt/model"
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

// checkTrainMemory refuses a model and batch whose training state would
// not fit this machine, naming the keys to change.
func checkTrainMemory(mc model.Config, tc TrainParams) error {
	params, acts := TrainBytes(mc, tc.Batch)
	have, ok := machineMemory()
	if !ok || params+acts <= have {
		return nil
	}
	return fmt.Errorf("train: model %v (train.model %s) with train.batch %d needs about %.1f GB (%.1f GB of parameters, gradients and Adam moments, %.1f GB of activations) but this machine has %.1f GB: lower train.batch (use train.accum for the same step size) or choose a smaller train.model, train.layers or train.d",
		mc, tc.Model, tc.Batch, (params+acts)/1e9, params/1e9, acts/1e9, have/1e9)
}
