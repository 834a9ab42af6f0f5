package vqvae

// Issue 29, round two (docs/reliability.md): the VQ-VAE weights loader
// against hostile files.

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/model"
)

// forged is a small safetensors file whose VQ-VAE metadata is tiny's with
// key set to value, and whose only tensor is one float.
func forged(t testing.TB, key, value string) []byte {
	t.Helper()
	m, err := New(tinyConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	md := m.meta()
	md[key] = value
	var buf bytes.Buffer
	if err := model.WriteSafetensors(&buf, []model.WTensor{{Name: "x", Shape: []int{1}, F32: []float32{0}}}, md); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReliability29_8_VQVAEHostileSizes: a small vqvae.safetensors whose
// metadata claims a huge model (hidden = 131072: 618 GB) is refused naming
// the metadata before New allocates anything for it; the loader behind
// vqvae-encode, show tokens and sample (pipelines.LoadVQVAE) and the
// vqvae-train resume is this Load.
func TestReliability29_8_VQVAEHostileSizes(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{"hidden", "1024", "the file's tensors hold"}, // 10M weights: 80 MB with gradients
		{"hidden", "131072", "more than the"},
		{"codes", "60000", "the file's tensors hold"},
		{"res_blocks", "100000000", "more than the"},
		{"code_dim", "1000000000", "more than the"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			b := forged(t, tc.key, tc.value)
			var err error
			alloc := testutil.Allocated(func() { _, err = Load(bytes.NewReader(b)) })
			if err == nil {
				t.Fatal("loaded")
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			for _, w := range []string{"vqvae: load: metadata", tc.key + "=" + tc.value, tc.want} {
				if !strings.Contains(first, w) {
					t.Errorf("error does not name %q: %v", w, err)
				}
			}
			if alloc > 64<<20 {
				t.Errorf("refusing a %d-byte file allocated %d MB", len(b), alloc>>20)
			}
		})
	}
}

// TestReliability29_8_WeightsCountsNew: Config.Weights, the size Load
// checks before allocating, is what New allocates, for every factor and
// residual depth.
func TestReliability29_8_WeightsCountsNew(t *testing.T) {
	for _, f := range []int{2, 4, 8} {
		for _, r := range []int{0, 1, 3} {
			cfg := tinyConfig()
			cfg.Factor, cfg.ResBlocks = f, r
			m, err := New(cfg, 1)
			if err != nil {
				t.Fatal(err)
			}
			n := len(m.Codebook) + len(m.EMACount) + len(m.EMASum)
			for _, p := range m.Params {
				n += len(p.W)
			}
			if got := cfg.Weights(); got != float64(n) {
				t.Errorf("factor %d res_blocks %d: Weights() = %v, New allocates %d", f, r, got, n)
			}
		}
	}
}

// TestReliability29_11_VQVAENonFinite: a VQ-VAE whose codebook or first
// convolution holds a NaN or an infinity is refused at load, naming the
// tensor, where vqvae-encode used to finish "done" with one code used.
func TestReliability29_11_VQVAENonFinite(t *testing.T) {
	for _, tc := range []struct {
		tensor string
		v      float32
	}{
		{"quantizer.codebook", float32(math.NaN())},
		{"encoder.down.0.weight", float32(math.NaN())},
		{"encoder.down.0.weight", float32(math.Inf(-1))},
		{"quantizer.ema_sum", float32(math.Inf(1))},
	} {
		t.Run(tc.tensor+"="+strconv.FormatFloat(float64(tc.v), 'g', -1, 32), func(t *testing.T) {
			m, err := New(tinyConfig(), 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range m.Weights() {
				if w.Name == tc.tensor {
					for i, d := 0, w.T.Data().([]float32); i < len(d); i++ {
						d[i] = tc.v
					}
				}
			}
			var buf bytes.Buffer
			if err := m.Save(&buf); err != nil {
				t.Fatal(err)
			}
			_, err = Load(&buf)
			if err == nil || !strings.Contains(strings.SplitN(err.Error(), "\n", 2)[0], `"`+tc.tensor+`"`) {
				t.Fatalf("want an error naming %s: %v", tc.tensor, err)
			}
		})
	}
}

// FuzzLoad: no input makes the VQ-VAE loader panic or allocate much more
// than a model the file could hold.
func FuzzLoad(f *testing.F) {
	m, err := New(tinyConfig(), 1)
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if err := m.Save(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(forged(f, "hidden", "131072"))
	f.Add(forged(f, "factor", "64"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m *Model
		alloc := testutil.Allocated(func() { m, _ = Load(bytes.NewReader(b)) })
		if alloc > 64<<20+uint64(64*len(b)) {
			t.Fatalf("a %d-byte file allocated %d MB", len(b), alloc>>20)
		}
		if m != nil {
			var out bytes.Buffer
			if err := m.Save(&out); err != nil {
				t.Fatal(err)
			}
		}
	})
}
