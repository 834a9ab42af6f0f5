package model

import (
	"bytes"
	"testing"

	"github.com/igpt/igpt/internal/kernels"
)

// TestDenseSafetensorsRoundTrip writes every parameter through its gorgonia
// tensor and reads the file back into another model's tensors: the values
// land in that model's own memory.
func TestDenseSafetensorsRoundTrip(t *testing.T) {
	cfg := Config{Layers: 1, D: 8, Heads: 2, Seq: 4, Vocab: 5}
	src, err := NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src.Init(3)
	var ws []WTensor
	for _, p := range src.Tensors() {
		w, err := WTensorOf(p.Name, p.Dense())
		if err != nil {
			t.Fatal(err)
		}
		if &w.F32[0] != &p.Data[0] {
			t.Fatalf("%s: WTensorOf copied", p.Name)
		}
		ws = append(ws, w)
	}
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, ws, nil); err != nil {
		t.Fatal(err)
	}
	st, err := ParseSafetensors(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := NewParams(cfg)
	for _, p := range dst.Tensors() {
		if err := st.Tensors[p.Name].Into(p.Dense()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range src.Data {
		if src.Data[i] != dst.Data[i] {
			t.Fatalf("value %d: %v, want %v", i, dst.Data[i], src.Data[i])
		}
	}
	if err := st.Tensors["lm_head.weight"].Into(kernels.Dense(make([]float32, 40), 8, 5)); err == nil {
		t.Error("a [5 8] tensor was read into a [8 5] one")
	}
}
