package model

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Reference checks against ../shared/bench/igpt_reference.py: the committed
// fixtures in testdata/ (written by testdata/gen_fixtures.sh) always, and a
// live run of the reference when /usr/bin/python3 has torch.
//
// Tolerance: for every tensor (logits, each hidden state, each layer's probe
// features, each gradient), max|ours − reference| <= 1e-4 · max|reference|,
// and |loss − reference| <= 1e-5 · reference, against the reference's
// float64 outputs.

// readNpy reads a little-endian .npy array of int64/int32 (as int64) or
// bool (as 0/1) and returns it with its shape.
func readNpy(path string) ([]int64, []int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		return nil, nil, fmt.Errorf("%s: not a .npy file", path)
	}
	var hl, start int
	if b[6] == 1 {
		hl, start = int(binary.LittleEndian.Uint16(b[8:])), 10
	} else {
		hl, start = int(binary.LittleEndian.Uint32(b[8:])), 12
	}
	hdr := string(b[start : start+hl])
	descr := regexp.MustCompile(`'descr':\s*'([^']*)'`).FindStringSubmatch(hdr)
	shp := regexp.MustCompile(`'shape':\s*\(([^)]*)\)`).FindStringSubmatch(hdr)
	if descr == nil || shp == nil || strings.Contains(hdr, "'fortran_order': True") {
		return nil, nil, fmt.Errorf("%s: unsupported header %q", path, hdr)
	}
	var shape []int
	n := 1
	for _, f := range strings.Split(shp[1], ",") {
		if f = strings.TrimSpace(f); f != "" {
			v, err := strconv.Atoi(f)
			if err != nil {
				return nil, nil, err
			}
			shape = append(shape, v)
			n *= v
		}
	}
	data := b[start+hl:]
	out := make([]int64, n)
	for i := range out {
		switch descr[1] {
		case "<i8":
			out[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
		case "<i4":
			out[i] = int64(int32(binary.LittleEndian.Uint32(data[4*i:])))
		case "|b1", "|u1":
			out[i] = int64(data[i])
		default:
			return nil, nil, fmt.Errorf("%s: dtype %s not supported", path, descr[1])
		}
	}
	return out, shape, nil
}

func readST(t *testing.T, path string) *SafeTensors {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := ReadSafetensors(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return st
}

func f64s(t *testing.T, st *SafeTensors, name string) []float64 {
	t.Helper()
	x, ok := st.Tensors[name]
	if !ok {
		t.Fatalf("reference output has no %q", name)
	}
	v, err := x.Float64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// refCase names the files of one reference comparison.
type refCase struct {
	model, tokens, mask                      string
	logitsAR, logitsBERT, gradsAR, gradsBERT string
}

// readRefInputs loads c's model, tokens [B,T] and BERT mask.
func readRefInputs(t *testing.T, c refCase) (p *Params, tokens []int32, mask []bool, B, T int) {
	t.Helper()
	f, err := os.Open(c.model)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err = LoadCheckpoint(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	tok64, shape, err := readNpy(c.tokens)
	if err != nil {
		t.Fatal(err)
	}
	B, T = shape[0], shape[1]
	if T != p.Config.Seq {
		t.Fatalf("tokens T=%d, model T=%d", T, p.Config.Seq)
	}
	tokens = make([]int32, len(tok64))
	for i, v := range tok64 {
		tokens[i] = int32(v)
	}
	m64, _, err := readNpy(c.mask)
	if err != nil {
		t.Fatal(err)
	}
	mask = make([]bool, len(m64))
	for i, v := range m64 {
		mask[i] = v != 0
	}
	return p, tokens, mask, B, T
}

func checkReference(t *testing.T, c refCase) {
	p, tokens, mask, B, T := readRefInputs(t, c)
	cfg := p.Config
	m := FromParams(p)
	C, L := cfg.D, cfg.Layers
	for _, o := range []struct {
		obj           Objective
		mask          []bool
		logits, grads string
	}{{AR, nil, c.logitsAR, c.gradsAR}, {BERT, mask, c.logitsBERT, c.gradsBERT}} {
		t.Run(o.obj.String(), func(t *testing.T) {
			ref := readST(t, o.logits)
			m.ZeroGrads()
			loss, err := m.Forward(tokens, o.mask, o.obj)
			if err != nil {
				t.Fatal(err)
			}
			wantLoss := f64s(t, ref, "loss")[0]
			if math.Abs(loss-wantLoss) > 1e-5*wantLoss {
				t.Errorf("loss %.9g, reference %.9g", loss, wantLoss)
			}
			check := func(what string, got []float32, want []float64) {
				t.Helper()
				if e := relErr(got, want); e > 1e-4 || math.IsNaN(e) {
					t.Errorf("%s: relative error %.3g > 1e-4", what, e)
				} else if testing.Verbose() {
					t.Logf("%s: relative error %.2g", what, e)
				}
			}
			check("logits", m.Logits(), f64s(t, ref, "logits"))
			hidden, probe := f64s(t, ref, "hidden"), f64s(t, ref, "probe")
			feats := make([]float32, (L+1)*B*C)
			if err := m.Probe(tokens, o.mask, o.obj, feats); err != nil {
				t.Fatal(err)
			}
			for l := 0; l <= L; l++ {
				check(fmt.Sprintf("hidden h_%d", l), m.Hidden(l), hidden[l*B*T*C:(l+1)*B*T*C])
				want := probe[l*B*C : (l+1)*B*C]
				check(fmt.Sprintf("probe features layer %d (Forward)", l), m.ProbeFeatures(l, nil), want)
				check(fmt.Sprintf("probe features layer %d (Probe)", l), feats[l*B*C:(l+1)*B*C], want)
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			gref := readST(t, o.grads)
			if gl := f64s(t, gref, "loss")[0]; math.Abs(loss-gl) > 1e-5*gl {
				t.Errorf("loss %.9g, reference grads' loss %.9g", loss, gl)
			}
			for _, g := range m.Grads.Tensors() {
				check("gradient "+g.Name, g.Data, f64s(t, gref, g.Name))
			}
		})
	}
}

// TestReferenceFixtures compares with the committed reference outputs.
func TestReferenceFixtures(t *testing.T) {
	d := "testdata"
	checkReference(t, refCase{
		model: filepath.Join(d, "ref_model.safetensors"), tokens: filepath.Join(d, "ref_tokens.npy"),
		mask:     filepath.Join(d, "ref_mask.npy"),
		logitsAR: filepath.Join(d, "ref_logits_ar.safetensors"), logitsBERT: filepath.Join(d, "ref_logits_bert.safetensors"),
		gradsAR: filepath.Join(d, "ref_grads_ar.safetensors"), gradsBERT: filepath.Join(d, "ref_grads_bert.safetensors"),
	})
}

// reference returns the python interpreter and the reference script, or
// skips the test.
func reference(t *testing.T) (py, script string) {
	t.Helper()
	py = "/usr/bin/python3"
	if v := os.Getenv("IGPT_PYTHON"); v != "" {
		py = v
	}
	script = filepath.Join("..", "..", "shared", "bench", "igpt_reference.py")
	if v := os.Getenv("IGPT_REFERENCE"); v != "" {
		script = v
	}
	if _, err := os.Stat(script); err != nil {
		skipOrFail(t, "reference script not found (%v); set IGPT_REFERENCE", err)
	}
	if out, err := exec.Command(py, "-c", "import torch, numpy").CombinedOutput(); err != nil {
		skipOrFail(t, "%s has no torch/numpy (%v: %s); apt-get install python3-torch python3-numpy to run the live reference check",
			py, err, bytes.TrimSpace(out))
	}
	return py, script
}

// skipOrFail skips a live reference check whose tools are missing, or
// fails it when IGPT_REQUIRE_TORCH=1 (CI installs PyTorch and sets it, so
// a missing reference is an error there, never a silent skip).
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("IGPT_REQUIRE_TORCH") == "1" {
		t.Fatalf("IGPT_REQUIRE_TORCH=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestReferenceLive runs igpt_reference.py (init, inputs, logits, grads) at
// the README's example size and compares; then checks that the reference
// reads our checkpoint (its logits of our random model equal ours) and our
// Hugging Face export (its load_safetensors sees every tensor, zero biases).
// checkOursByReference saves a checkpoint of ours and has the reference
// compute its logits and loss on fp("tok.npy"); it returns the model.
func checkOursByReference(t *testing.T, py, ref string, fp func(string) string) *Model {
	t.Helper()
	cfg := Config{Layers: 2, D: 64, Heads: 4, Seq: 32, Vocab: 512}
	m := testModel(t, cfg, 9, 0.05)
	f, err := os.Create(fp("ours.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveCheckpoint(f, m.Params, map[string]string{"note": "go test"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, py, ref, "logits", "--model", fp("ours.safetensors"), "--tokens", fp("tok.npy"), "--out", fp("ours_logits.safetensors"), "--float64")
	tok64, _, _ := readNpy(fp("tok.npy"))
	tokens := make([]int32, len(tok64))
	for i, v := range tok64 {
		tokens[i] = int32(v)
	}
	loss, err := m.Forward(tokens, nil, AR)
	if err != nil {
		t.Fatal(err)
	}
	out := readST(t, fp("ours_logits.safetensors"))
	if e := relErr(m.Logits(), f64s(t, out, "logits")); e > 1e-4 {
		t.Errorf("reference logits of our checkpoint: relative error %.3g", e)
	}
	if wl := f64s(t, out, "loss")[0]; math.Abs(loss-wl) > 1e-5*wl {
		t.Errorf("reference loss of our checkpoint %.9g, ours %.9g", wl, loss)
	}
	return m
}

func TestReferenceLive(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	py, ref := reference(t)
	d := t.TempDir()
	fp := func(n string) string { return filepath.Join(d, n) }
	run(t, py, ref, "init", "--layers", "2", "--d", "64", "--heads", "4", "--seq", "32", "--vocab", "512",
		"--seed", "1", "--out", fp("m.safetensors"))
	run(t, py, ref, "inputs", "--batch", "3", "--seq", "32", "--vocab", "512", "--seed", "2",
		"--out", fp("tok.npy"), "--mask-out", fp("mask.npy"))
	for _, o := range []struct{ suffix, mask string }{{"ar", ""}, {"bert", fp("mask.npy")}} {
		for _, cmd := range []string{"logits", "grads"} {
			args := []string{ref, cmd, "--model", fp("m.safetensors"), "--tokens", fp("tok.npy"),
				"--out", fp(cmd + "_" + o.suffix + ".safetensors"), "--float64"}
			if o.mask != "" {
				args = append(args, "--bert-mask", o.mask)
			}
			run(t, py, args...)
		}
	}
	t.Run("example", func(t *testing.T) {
		checkReference(t, refCase{model: fp("m.safetensors"), tokens: fp("tok.npy"), mask: fp("mask.npy"),
			logitsAR: fp("logits_ar.safetensors"), logitsBERT: fp("logits_bert.safetensors"),
			gradsAR: fp("grads_ar.safetensors"), gradsBERT: fp("grads_bert.safetensors")})
	})

	m := checkOursByReference(t, py, ref, fp)

	// Our Hugging Face export, read by the reference's safetensors reader.
	if err := exportHF(fp("hf"), m.Params); err != nil {
		t.Fatal(err)
	}
	check := `
import sys, json, numpy as np
sys.path.insert(0, sys.argv[1])
import igpt_reference as ref
hf, meta = ref.load_safetensors(sys.argv[2] + '/model.safetensors')
ours, _ = ref.load_safetensors(sys.argv[3])
cfg = json.load(open(sys.argv[2] + '/config.json'))
assert meta.get('format') == 'pt', meta
assert cfg['vocab_size'] == 513 and cfg['n_embd'] == 64 and cfg['activation_function'] == 'quick_gelu', cfg
biases = [k for k in hf if k.endswith('.bias')]
assert len(biases) == 4 * cfg['n_layer'], biases
assert all(not hf[k].any() for k in biases)
assert set(hf) - set(biases) == set(ours), set(hf) ^ set(ours)
assert all(np.array_equal(hf[k], ours[k]) and hf[k].dtype == np.float32 for k in ours)
assert hf['lm_head.weight'].shape == (512, 64) and hf['transformer.h.1.attn.c_attn.weight'].shape == (64, 192)
print('hf export ok', len(hf), 'tensors')
`
	got := run(t, py, "-c", check, filepath.Dir(ref), fp("hf"), fp("ours.safetensors"))
	if !strings.Contains(got, "hf export ok") {
		t.Errorf("reference check of the HF export: %s", got)
	}
}
