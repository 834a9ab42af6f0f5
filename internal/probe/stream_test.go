package probe

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestLayersFromLoadsOneLayerAtATime: LayersFrom asks for each layer once,
// in order, only when it probes it (the caller never holds two), and
// reports what Layers reports over the same splits.
func TestLayersFromLoadsOneLayerAtATime(t *testing.T) {
	layers := layeredSplits([]float64{0.2, 0.6, 0.3})
	grid := DefaultGrid(0, -2)
	opts := Options{Standardize: true, Logger: quietLogger()}
	want, err := Layers(layers, grid, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Each fit reports progress; a load while the previous layer has not
	// been fitted yet would be seen as no progress since the last load.
	var calls []int
	fits := 0
	got, err := LayersFrom([]int{0, 1, 2}, func(l int) (Split, error) {
		if len(calls) > 0 && fits == 0 {
			return Split{}, fmt.Errorf("layer %d asked for before layer %d was probed", l, calls[len(calls)-1])
		}
		calls, fits = append(calls, l), 0
		return layers[l], nil
	}, grid, Options{Standardize: true, Logger: quietLogger(), Fit: FitOptions{Progress: func(n int) { fits += n }}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(calls, []int{0, 1, 2}) {
		t.Fatalf("loads %v, want each layer once in order", calls)
	}
	for i, row := range got.Rows {
		w := want.Rows[i]
		if row.Layer != w.Layer || row.TestAcc != w.TestAcc || row.ValAcc != w.ValAcc || row.L2 != w.L2 || row.Iterations != w.Iterations {
			t.Fatalf("row %d: %+v, Layers gave %+v", i, row, w)
		}
	}
	if *got.Images != *want.Images {
		t.Fatalf("images %+v, want %+v", got.Images, want.Images)
	}
	if _, err := LayersFrom([]int{1, 0}, func(int) (Split, error) { return Split{}, nil }, grid, opts); err == nil || !strings.Contains(err.Error(), "increasing") {
		t.Fatalf("unsorted layers: %v", err)
	}
	if _, err := LayersFrom([]int{0}, func(int) (Split, error) { return Split{}, fmt.Errorf("disk gone") }, grid, opts); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("load error: %v", err)
	}
}
