package model

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// Benchmarks of the training step's parts and of the forward-only path, at
// L4 d256 H8 and T = 256 or 1024 (8192 tokens per batch). Run with
//
//	go test -run XXX -bench . -benchtime 5x ./model
func benchModel(b *testing.B, T int) (*Model, []int32) {
	cfg := Config{Layers: 4, D: 256, Heads: 8, Seq: T, Vocab: 512}
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	m.Params.Init(1)
	m.InferenceChunk = 8192
	rng := rand.New(rand.NewPCG(1, 1))
	return m, randomTokens(rng, 8192, cfg.Vocab)
}

func BenchmarkForward(b *testing.B) {
	for _, T := range []int{256, 1024} {
		m, x := benchModel(b, T)
		b.Run("train/T"+strconv.Itoa(T), func(b *testing.B) {
			for range b.N {
				if _, err := m.Forward(x, nil, AR); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run("evaluate/T"+strconv.Itoa(T), func(b *testing.B) {
			for range b.N {
				if _, _, err := m.Evaluate(x, nil, AR); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run("backward/T"+strconv.Itoa(T), func(b *testing.B) {
			m.ZeroGrads()
			m.Forward(x, nil, AR)
			b.ResetTimer()
			for range b.N {
				if err := m.Backward(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
