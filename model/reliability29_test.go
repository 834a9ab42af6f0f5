package model

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// TestReliability29_11_NonFiniteWeights: a NaN or an infinity in any
// weights file (an iGPT checkpoint, its optimizer state, a classifier) is
// refused at load by STTensor.Float32s, naming the tensor.
func TestReliability29_11_NonFiniteWeights(t *testing.T) {
	cfg := Config{Layers: 1, D: 8, Heads: 1, Seq: 4, Vocab: 16}
	p, err := NewParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Init(1)
	tensor := p.Tensors()[0]
	for _, tc := range []struct {
		name string
		v    float32
		load func(t *testing.T, v float32) error
		want string
	}{
		{"checkpoint NaN", float32(math.NaN()), func(t *testing.T, v float32) error {
			tensor.Data[3] = v
			defer func() { tensor.Data[3] = 0 }()
			var b bytes.Buffer
			if err := SaveCheckpoint(&b, p, nil); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadCheckpoint(&b)
			return err
		}, tensor.Name},
		{"classifier head +Inf", float32(math.Inf(1)), func(t *testing.T, v float32) error {
			h := NewClassHead(cfg.D, 3, 1)
			h.W[5] = v
			var b bytes.Buffer
			if err := SaveClassifier(&b, p, h, nil); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := LoadClassifier(&b)
			return err
		}, ClassWeightName},
		{"optimizer state -Inf", float32(math.Inf(-1)), func(t *testing.T, v float32) error {
			o, err := NewOptimizer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			o.V.Tensors()[0].Data[0] = v
			var b bytes.Buffer
			if err := o.SaveState(&b); err != nil {
				t.Fatal(err)
			}
			o2, _ := NewOptimizer(cfg)
			return o2.LoadState(&b)
		}, "v." + tensor.Name},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load(t, tc.v)
			if err == nil {
				t.Fatal("loaded")
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			if !strings.Contains(first, `"`+tc.want+`"`) || !strings.Contains(first, "not finite") {
				t.Errorf("error does not name tensor %s as not finite: %v", tc.want, err)
			}
		})
	}
}
