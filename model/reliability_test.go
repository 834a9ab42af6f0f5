package model

import (
	"bytes"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/testutil"
)

// The reliability suite (docs/reliability.md): hostile inputs get an error
// naming the cause, without a panic and without allocating for the claim.

const allocBudget = 64 << 20 // bytes a refused input may cost

// checkpointWith saves a tiny valid model and adds one extra 1-element
// tensor named extra.
func checkpointWith(t *testing.T, extra string, meta map[string]string) []byte {
	t.Helper()
	p, err := NewParams(Config{Layers: 1, D: 4, Heads: 1, Seq: 4, Vocab: 3})
	if err != nil {
		t.Fatal(err)
	}
	ts := paramTensors(p, "")
	if extra != "" {
		ts = append(ts, WTensor{Name: extra, Shape: []int{1}, F32: []float32{0}})
	}
	var buf bytes.Buffer
	m := configMeta(p.Config, nil)
	for k, v := range meta {
		m[k] = v
	}
	if err := WriteSafetensors(&buf, ts, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReliability4_SafetensorsHugeLayerIndex(t *testing.T) {
	b := checkpointWith(t, "transformer.h.1048575.ln_1.weight", map[string]string{MetaLayers: "1048576"})
	var err error
	n := testutil.Allocated(func() { _, _, err = LoadCheckpoint(bytes.NewReader(b)) })
	if err == nil {
		t.Fatal("a checkpoint naming layer 1048575 loaded")
	}
	if n > allocBudget {
		t.Errorf("refusing it allocated %d MB", n>>20)
	}
	if !strings.Contains(err.Error(), "L1048576") || !strings.Contains(err.Error(), "parameters") {
		t.Errorf("error does not name the claimed model and its size: %v", err)
	}
}

func TestReliability4_HFHugeEmbd(t *testing.T) {
	for _, d := range []string{"3037000500", "1000000"} {
		t.Run(d, func(t *testing.T) {
			cfg := `{"model_type":"imagegpt","n_layer":2,"n_embd":` + d + `,"n_head":1,"n_positions":16,"vocab_size":17,
				"activation_function":"quick_gelu","layer_norm_epsilon":1e-5,"scale_attn_weights":true}`
			var err error
			n := testutil.Allocated(func() {
				_, err = ReadHF(strings.NewReader(cfg), bytes.NewReader(checkpointWith(t, "", nil)))
			})
			if err == nil {
				t.Fatal("n_embd " + d + " accepted")
			}
			if n > allocBudget {
				t.Errorf("refusing it allocated %d MB", n>>20)
			}
			if !strings.Contains(err.Error(), "d"+d) {
				t.Errorf("error does not name the width: %v", err)
			}
		})
	}
}

// FuzzReadHF: any config.json and model.safetensors pair either fails or
// loads a model whose config validates; never a panic or an allocation
// the file does not back.
func FuzzReadHF(f *testing.F) {
	cfg := `{"model_type":"imagegpt","n_layer":1,"n_embd":4,"n_head":1,"n_positions":4,"vocab_size":4,
		"activation_function":"quick_gelu","layer_norm_epsilon":1e-5,"scale_attn_weights":true}`
	p, _ := NewParams(Config{Layers: 1, D: 4, Heads: 1, Seq: 4, Vocab: 3})
	var st bytes.Buffer
	WriteSafetensors(&st, paramTensors(p, ""), nil)
	f.Add([]byte(cfg), st.Bytes())
	f.Add([]byte(strings.Replace(cfg, `"n_embd":4`, `"n_embd":3037000500`, 1)), st.Bytes())
	f.Add([]byte(strings.Replace(cfg, `"n_layer":1`, `"n_layer":1048576`, 1)), st.Bytes())
	f.Fuzz(func(t *testing.T, cfg, model []byte) {
		var p *Params
		var err error
		n := testutil.Allocated(func() { p, err = ReadHF(bytes.NewReader(cfg), bytes.NewReader(model)) })
		if err != nil {
			if n > allocBudget+uint64(8*len(model)) {
				t.Fatalf("a refused input allocated %d MB", n>>20)
			}
			return
		}
		if err := p.Config.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}
