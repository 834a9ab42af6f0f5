package stages

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"reflect"
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

// checkFinite refuses NaN and ±Inf anywhere in the config, naming the key
// ("train.lr"): YAML accepts .nan and .inf, JSON (the stage key) cannot
// encode them, and every comparison with NaN passes range checks.
func (c *Config) checkFinite() error {
	return finite(reflect.ValueOf(c).Elem(), "")
}

func finite(v reflect.Value, key string) error {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%s is %v: give a finite number", key, f)
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return finite(v.Elem(), key)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if err := finite(v.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			if err := finite(iter.Value(), fmt.Sprintf("%s.%v", key, iter.Key())); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			k := name
			if key != "" {
				k = key + "." + name
			}
			if err := finite(v.Field(i), k); err != nil {
				return err
			}
		}
	}
	return nil
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
