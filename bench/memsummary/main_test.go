package main

import "testing"

func TestSummarise(t *testing.T) {
	for _, c := range []struct {
		name     string
		m        map[int][]float64
		ratio    float64
		ok, skip bool
	}{
		{"flat", map[int][]float64{50: {100, 120, 101}, 200: {104, 102, 130}}, 104.0 / 101, true, false},
		{"grows by the median", map[int][]float64{50: {100, 100, 100}, 200: {111, 109, 112}}, 1.11, false, false},
		{"one high pass is not growth", map[int][]float64{50: {100, 100, 100}, 200: {100, 140, 101}}, 1.01, true, false},
		{"over 2 GiB", map[int][]float64{50: {2100}, 200: {2100}}, 1, false, false},
		{"no workers", map[int][]float64{50: {0, 0}, 200: {0, 0}}, 0, true, true},
		{"even count", map[int][]float64{50: {100, 110}, 200: {105, 115}}, 110.0 / 105, true, false},
	} {
		_, ratio, _, ok, skip := summarise(c.m)
		if skip != c.skip || ok != c.ok || (!skip && (ratio < c.ratio-1e-9 || ratio > c.ratio+1e-9)) {
			t.Errorf("%s: ratio %.4f ok %v skip %v; want %.4f %v %v", c.name, ratio, ok, skip, c.ratio, c.ok, c.skip)
		}
	}
}
