package stages

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/kernels"
	"github.com/igpt/igpt/model"
)

// precisionKeys parses a config and returns the train and finetune stage
// keys (with no upstream) and the train section's canonical JSON.
func precisionKeys(t *testing.T, yaml string) (train, finetune, canon string) {
	t.Helper()
	cfg, err := ParseConfig([]byte("dataset: {name: cifar10}\n" + yaml))
	if err != nil {
		t.Fatal(err)
	}
	tk, err := Key(trainStage{}, trainStage{}.Params(cfg), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fk, err := Key(finetuneStage{}, finetuneStage{}.Params(cfg), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := canonicalJSON(trainStage{}.Params(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return tk, fk, string(c)
}

// TestPrecisionConfigKeys: train.precision and finetune.precision left out
// or fp32 leave the stage keys as they were (the key is absent from the
// hashed JSON), bf16 changes them, auto gives bf16's keys where the CPU
// has AVX512_BF16 and fp32's elsewhere, and anything else is refused at
// load, naming the key and its values.
func TestPrecisionConfigKeys(t *testing.T) {
	t0, f0, canon := precisionKeys(t, "")
	if strings.Contains(canon, "precision") {
		t.Fatalf("the default train params hash %s: fp32 must stay out of the key", canon)
	}
	t1, f1, _ := precisionKeys(t, "train: {precision: fp32}\nfinetune: {precision: fp32}\n")
	if t1 != t0 || f1 != f0 {
		t.Fatalf("precision: fp32 written out changed the keys: train %s -> %s, finetune %s -> %s", t0, t1, f0, f1)
	}
	assertConfigError(t, "train: {precision: fp16}", `train.precision is "fp16": want one of fp32, bf16, auto`)
	assertConfigError(t, "finetune: {precision: float}", `finetune.precision is "float": want one of fp32, bf16, auto`)
	// auto resolves at load to what this CPU runs, and the key holds it.
	ta, fa, canonA := precisionKeys(t, "train: {precision: auto}\nfinetune: {precision: auto}\n")
	if !kernels.HasBF16() {
		if ta != t0 || fa != f0 || strings.Contains(canonA, "precision") {
			t.Fatalf("auto without AVX512_BF16: keys train %s finetune %s, want fp32's %s, %s (params %s)", ta, fa, t0, f0, canonA)
		}
		assertConfigError(t, "train: {precision: bf16}", "train.precision is bf16 but bf16 needs the CPU flag AVX512_BF16")
		assertConfigError(t, "finetune: {precision: bf16}", "finetune.precision is bf16 but bf16 needs the CPU flag AVX512_BF16")
		return
	}
	t2, f2, canon2 := precisionKeys(t, "train: {precision: bf16}\nfinetune: {precision: bf16}\n")
	if t2 == t0 || f2 == f0 || !strings.Contains(canon2, `"precision":"bf16"`) {
		t.Fatalf("bf16: keys train %s finetune %s (fp32 %s, %s), params %s", t2, f2, t0, f0, canon2)
	}
	if ta != t2 || fa != f2 {
		t.Fatalf("auto with AVX512_BF16: keys train %s finetune %s, want bf16's %s, %s (params %s)", ta, fa, t2, f2, canonA)
	}
	cfg, err := ParseConfig([]byte("dataset: {name: cifar10}\ntrain: {precision: bf16}\n"))
	if err != nil || cfg.Train.Prec() != model.BF16 || cfg.Finetune.Prec() != model.FP32 {
		t.Fatalf("bf16: %v, train %v, finetune %v", err, cfg.Train.Prec(), cfg.Finetune.Prec())
	}
}

// TestPrecisionBF16RefusedWithoutFlag loads a bf16 config in a process
// where the AVX512_BF16 kernels are off (IGPT_BF16=off, as on a CPU
// without the flag): the error names the key and the CPU flag, while an
// auto config loads and runs fp32.
func TestPrecisionBF16RefusedWithoutFlag(t *testing.T) {
	if os.Getenv("IGPT_PRECISION_CHILD") != "" {
		_, err := ParseConfig([]byte("dataset: {name: cifar10}\ntrain: {precision: bf16}\n"))
		os.Stdout.WriteString("err=" + errString(err) + "\n")
		cfg, err := ParseConfig([]byte("dataset: {name: cifar10}\ntrain: {precision: auto}\nfinetune: {precision: auto}\n"))
		if err == nil {
			os.Stdout.WriteString("auto=" + cfg.Train.Prec().String() + "," + cfg.Finetune.Prec().String() + "\n")
		} else {
			os.Stdout.WriteString("auto err=" + err.Error() + "\n")
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPrecisionBF16RefusedWithoutFlag$", "-test.v")
	cmd.Env = append(os.Environ(), "IGPT_PRECISION_CHILD=1", kernels.BF16EnvVar+"=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{
		"err=train.precision is bf16 but bf16 needs the CPU flag AVX512_BF16 (VDPBF16PS), which this CPU",
		"\nauto=fp32,fp32\n", // auto loads and falls back to fp32 where bf16 would be refused
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("child output %q lacks %q", out, want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestBF16BytesEstimate: the memory check counts the bf16 copies, less
// the fp32 buffers they replace, in bf16 only.
func TestBF16BytesEstimate(t *testing.T) {
	mc := model.Config{Layers: 2, D: 64, Heads: 4, Seq: 16, Vocab: 8}
	if b := BF16Bytes(mc, 4, model.FP32); b != 0 {
		t.Fatalf("fp32: %v bytes", b)
	}
	// 2 bytes × (12·64²·2 weights + 7·64·64·2 inputs + 4·64·64 gradient)
	// − 4 bytes × 6·64·64·2 fp32 outputs not kept, N = 4·16 = 64
	if b, want := BF16Bytes(mc, 4, model.BF16), 2.0*(12*64*64*2+7*64*64*2+4*64*64)-4*6*64*64*2; b != want {
		t.Fatalf("bf16: %v bytes, want %v", b, want)
	}
}

// TestTrainBF16Runs trains the tiny experiment of trainYAML in bf16 where
// the CPU has AVX512_BF16: the run logs the dispatch choice and its
// precision at start-up, and its loss falls as the fp32 run's does.
func TestTrainBF16Runs(t *testing.T) {
	if !kernels.HasBF16() {
		t.Skip("no AVX512_BF16 kernels here: TestPrecisionConfigKeys checks the refusal")
	}
	src := folderArchive(t, 8, nil)
	yaml := strings.Replace(trainYAML(t.TempDir(), src, 12, 32, 2, 0.01), "threads: 2}", "threads: 2, precision: bf16}", 1)
	var log bytes.Buffer
	if _, err := runUntil(t, yaml, "train", Options{Log: slog.New(slog.NewTextHandler(&log, nil))}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`msg="kernels dispatch"`, "path=avx512 bf16=avx512_bf16 cpu_avx512_bf16=true", `msg="train: model"`, "precision=bf16"} {
		if !strings.Contains(log.String(), want) {
			t.Fatalf("the log lacks %q:\n%s", want, log.String())
		}
	}
	root := strings.TrimPrefix(strings.SplitN(yaml, "\n", 2)[0], "root: ")
	metrics, err := os.ReadFile(filepath.Join(trainDir(t, root), MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(metrics)), "\n")
	var first, last Metric
	if json.Unmarshal([]byte(lines[0]), &first) != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || !(last.Loss < first.Loss) {
		t.Fatalf("bf16 loss did not fall: %v -> %v (%d lines)", first.Loss, last.Loss, len(lines))
	}
}
