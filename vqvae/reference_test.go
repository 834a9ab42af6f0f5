package vqvae

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/igpt/igpt/model"
)

// The PyTorch reference (bench/vqvae_reference.py step, float64) on tiny
// models: committed fixtures (testdata/f{2,4}_*.safetensors) so that the
// check runs without torch, and a live run when torch is installed.
// VQVAE_UPDATE_FIXTURES=1 makes the live test rewrite the fixtures.

const refDataVar = 0.07

var refCases = []struct {
	factor, n, h, w int
}{
	{2, 2, 6, 10},
	{4, 3, 8, 12},
}

func refModel(f int) *Model {
	cfg := tinyConfig()
	cfg.Factor = f
	m, err := New(cfg, uint64(20+f))
	if err != nil {
		panic(err)
	}
	return m
}

func writeST(path string, ts []model.WTensor) error {
	var b bytes.Buffer
	if err := model.WriteSafetensors(&b, ts, nil); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func readST(t *testing.T, path string) *model.SafeTensors {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := model.ParseSafetensors(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return st
}

// compareWithTorch runs one step of m on x and checks it against ref.
func compareWithTorch(t *testing.T, m *Model, x []float32, n, h, w int, ref *model.SafeTensors) {
	t.Helper()
	get := func(name string) []float64 {
		tt, ok := ref.Tensors[name]
		if !ok {
			t.Fatalf("reference has no %s", name)
		}
		v, err := tt.Float64s()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return v
	}
	s, err := m.Forward(x, n, h, w, refDataVar)
	if err != nil {
		t.Fatal(err)
	}
	m.Backward(refDataVar)
	g := m.last
	var worst float64 // largest relative error, logged
	defer func() { t.Logf("largest relative error Go vs torch float64: %.2g", worst) }()
	check := func(name string, got []float32, want []float64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, reference %d", name, len(got), len(want))
		}
		var num, den float64
		for i := range want {
			num = math.Max(num, math.Abs(float64(got[i])-want[i]))
			den = math.Max(den, math.Abs(want[i]))
		}
		worst = math.Max(worst, num/den)
		if num > 1e-5*den {
			t.Errorf("%s: max |Go − torch| = %g, %g relative", name, num, num/den)
		}
	}
	codes, err := ref.Tensors["codes"].Ints()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range codes {
		if int64(g.codes[i]) != c {
			t.Fatalf("code %d: Go %d, torch %d", i, g.codes[i], c)
		}
	}
	check("z_e", g.acts[g.ze], get("z_e"))
	check("reconstruction", g.acts[g.y], get("reconstruction"))
	losses := get("losses")
	for i, v := range []float64{s.Loss, s.Recon, s.MSE, s.Commit} {
		if math.Abs(v-losses[i]) > 1e-5*math.Abs(losses[i]) {
			t.Errorf("loss %d (loss, recon, mse, commit): Go %g, torch %g", i, v, losses[i])
		}
	}
	for _, p := range m.Params {
		check("grad."+p.Name, p.G, get("grad."+p.Name))
	}
	m.UpdateCodebook()
	check("updated.codebook", m.Codebook, get("updated.codebook"))
	check("updated.ema_count", m.EMACount, get("updated.ema_count"))
	check("updated.ema_sum", m.EMASum, get("updated.ema_sum"))
}

func TestTorchFixtures(t *testing.T) {
	for _, c := range refCases {
		t.Run(fmt.Sprintf("f%d", c.factor), func(t *testing.T) {
			dir := filepath.Join("testdata", fmt.Sprintf("f%d_", c.factor))
			mb, err := os.ReadFile(dir + "model.safetensors")
			if err != nil {
				t.Fatal(err)
			}
			m, err := Load(bytes.NewReader(mb))
			if err != nil {
				t.Fatal(err)
			}
			x, err := readST(t, dir+"images.safetensors").Tensors["images"].Float32s(nil)
			if err != nil {
				t.Fatal(err)
			}
			compareWithTorch(t, m, x, c.n, c.h, c.w, readST(t, dir+"torch.safetensors"))
		})
	}
}

func TestTorchLive(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		if os.Getenv("IGPT_REQUIRE_TORCH") == "1" {
			t.Fatalf("IGPT_REQUIRE_TORCH=1 but PyTorch is not available (%s -c 'import torch': %v): apt-get install python3-torch", py, err)
		}
		t.Skipf("PyTorch not available (%s -c 'import torch': %v); the committed fixtures are checked by TestTorchFixtures", py, err)
	}
	update := os.Getenv("VQVAE_UPDATE_FIXTURES") == "1"
	for _, c := range refCases {
		t.Run(fmt.Sprintf("f%d", c.factor), func(t *testing.T) {
			dir := t.TempDir()
			if update {
				dir = "testdata"
				os.MkdirAll(dir, 0o755)
			}
			pre := filepath.Join(dir, fmt.Sprintf("f%d_", c.factor))
			m := refModel(c.factor)
			var mb bytes.Buffer
			if err := m.Save(&mb); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(pre+"model.safetensors", mb.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			x := randImages(uint64(30+c.factor), c.n*c.h*c.w*3)
			if err := writeST(pre+"images.safetensors", []model.WTensor{{Name: "images", Shape: []int{c.n, c.h, c.w, 3}, F32: x}}); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(py, "../bench/vqvae_reference.py", "step", "--model", pre+"model.safetensors",
				"--images", pre+"images.safetensors", "--data-var", fmt.Sprint(refDataVar), "--float64",
				"--out", pre+"torch.safetensors")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", cmd, err, out)
			}
			compareWithTorch(t, m, x, c.n, c.h, c.w, readST(t, pre+"torch.safetensors"))
		})
	}
}
