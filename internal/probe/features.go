package probe

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sort"

	"github.com/igpt/igpt/internal/records"
)

// FeatureSet collects the records.Features of one split (every image at every
// layer, in any order) and turns them into one matrix per layer with rows
// sorted by key, so the matrices do not depend on the order the records
// arrived in.
type FeatureSet struct {
	name   string
	layers map[int]*layerRows
	labels map[string]int // key → label, shared by all layers
}

type layerRows struct {
	dim  int
	rows map[string][]float32
}

// NewFeatureSet returns an empty set; name (e.g. "train") prefixes errors.
func NewFeatureSet(name string) *FeatureSet {
	return &FeatureSet{name: name, layers: map[int]*layerRows{}, labels: map[string]int{}}
}

// Add adds one record. It rejects an empty key, a negative label or layer, an
// empty vector, a vector whose length differs from the layer's earlier
// records, a NaN or infinite entry, a (key, layer) seen before, and a key
// whose label differs from its label at another layer; errors name the key.
func (s *FeatureSet) Add(f records.Features) error {
	switch {
	case f.Key == "":
		return fmt.Errorf("probe: %s features: record at layer %d has an empty key", s.name, f.Layer)
	case f.Layer < 0:
		return fmt.Errorf("probe: %s features: key %q has layer %d", s.name, f.Key, f.Layer)
	case f.Label < 0:
		return fmt.Errorf("probe: %s features: key %q layer %d has label %d (unlabelled images cannot be probed)", s.name, f.Key, f.Layer, f.Label)
	case len(f.Vec) == 0:
		return fmt.Errorf("probe: %s features: key %q layer %d has an empty vector", s.name, f.Key, f.Layer)
	}
	for j, v := range f.Vec {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("probe: %s features: key %q layer %d: feature %d is %v", s.name, f.Key, f.Layer, j, v)
		}
	}
	if l, ok := s.labels[f.Key]; ok && l != f.Label {
		return fmt.Errorf("probe: %s features: key %q has label %d at layer %d and %d at another layer", s.name, f.Key, f.Label, f.Layer, l)
	}
	lr := s.layers[f.Layer]
	if lr == nil {
		lr = &layerRows{dim: len(f.Vec), rows: map[string][]float32{}}
		s.layers[f.Layer] = lr
	}
	if len(f.Vec) != lr.dim {
		return fmt.Errorf("probe: %s features: key %q layer %d has %d features, earlier records of the layer have %d", s.name, f.Key, f.Layer, len(f.Vec), lr.dim)
	}
	if _, dup := lr.rows[f.Key]; dup {
		return fmt.Errorf("probe: %s features: key %q appears twice at layer %d", s.name, f.Key, f.Layer)
	}
	lr.rows[f.Key] = slices.Clone(f.Vec)
	s.labels[f.Key] = f.Label
	return nil
}

// ReadFrom adds every record of a Features shard until io.EOF.
func (s *FeatureSet) ReadFrom(r *records.Reader) (int, error) {
	if r.Kind() != records.KindFeatures {
		return 0, fmt.Errorf("probe: %s features: shard holds %s records", s.name, r.Kind())
	}
	n := 0
	for {
		var f records.Features
		err := r.Next(&f)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("probe: %s features: %w", s.name, err)
		}
		if err := s.Add(f); err != nil {
			return n, err
		}
		n++
	}
}

// Layers returns the layers seen, in increasing order.
func (s *FeatureSet) Layers() []int { return slices.Sorted(maps.Keys(s.layers)) }

// Len returns the number of records at a layer.
func (s *FeatureSet) Len(layer int) int {
	if lr := s.layers[layer]; lr != nil {
		return len(lr.rows)
	}
	return 0
}

// Keys returns every key of the set in sorted order, with its label.
func (s *FeatureSet) Keys() ([]string, []int) {
	keys := slices.Sorted(maps.Keys(s.labels))
	y := make([]int, len(keys))
	for i, k := range keys {
		y[i] = s.labels[k]
	}
	return keys, y
}

// Matrix returns a layer's features, one row per key in sorted key order,
// with the labels and keys in the same order.
func (s *FeatureSet) Matrix(layer int) (*Matrix, []int, []string, error) {
	lr := s.layers[layer]
	if lr == nil {
		return nil, nil, nil, fmt.Errorf("probe: %s features: no records at layer %d (layers: %v)", s.name, layer, s.Layers())
	}
	keys := slices.Sorted(maps.Keys(lr.rows))
	m := &Matrix{Rows: len(keys), Cols: lr.dim, Data: make([]float32, len(keys)*lr.dim)}
	y := make([]int, len(keys))
	for i, k := range keys {
		copy(m.Row(i), lr.rows[k])
		y[i] = s.labels[k]
	}
	return m, y, keys, nil
}

// checkComplete checks that every layer holds the same keys.
func (s *FeatureSet) checkComplete() error {
	layers := s.Layers()
	if len(layers) == 0 {
		return fmt.Errorf("probe: %s features: no records", s.name)
	}
	for _, l := range layers {
		lr := s.layers[l]
		if len(lr.rows) == len(s.labels) {
			continue
		}
		missing := make([]string, 0, 3)
		for _, k := range slices.Sorted(maps.Keys(s.labels)) {
			if _, ok := lr.rows[k]; !ok {
				missing = append(missing, k)
				if len(missing) == 3 {
					break
				}
			}
		}
		return fmt.Errorf("probe: %s features: layer %d has %d of %d keys; missing e.g. %q", s.name, l, len(lr.rows), len(s.labels), missing)
	}
	return nil
}

// AssembleSplits builds one Split per layer from the train, validation and
// test feature sets. Every set must hold the same layers with the same
// widths, and within a set every layer the same keys. When val is nil, a
// seeded valFrac of train (by key, the same images at every layer) becomes
// the validation split, as the paper holds out 10% of CIFAR's train split.
// A key present in two splits is logged as a warning.
func AssembleSplits(train, val, test *FeatureSet, valFrac float64, seed uint64) (map[int]Split, error) {
	if train == nil || test == nil {
		return nil, errors.New("probe: assemble splits: train and test feature sets are required")
	}
	sets := []*FeatureSet{train, test}
	if val != nil {
		sets = append(sets, val)
	}
	for _, s := range sets {
		if err := s.checkComplete(); err != nil {
			return nil, err
		}
	}
	layers := train.Layers()
	for _, s := range sets[1:] {
		if got := s.Layers(); !slices.Equal(got, layers) {
			return nil, fmt.Errorf("probe: assemble splits: %s has layers %v, %s has %v", s.name, got, train.name, layers)
		}
		for _, l := range layers {
			if a, b := train.layers[l].dim, s.layers[l].dim; a != b {
				return nil, fmt.Errorf("probe: assemble splits: layer %d has %d features in %s, %d in %s", l, a, train.name, b, s.name)
			}
		}
	}
	for i, a := range sets {
		for _, b := range sets[i+1:] {
			if k, n := overlap(a.labels, b.labels); n > 0 {
				slog.Warn("probe: keys in two splits", "a", a.name, "b", b.name, "count", n, "example", k)
			}
		}
	}

	var valIdx, trIdx []int
	if val == nil {
		n := len(train.labels)
		nVal := int(math.Round(valFrac * float64(n)))
		if !(valFrac > 0 && valFrac < 1) || nVal < 1 || nVal >= n {
			return nil, fmt.Errorf("probe: assemble splits: no validation set and a hold-out of %v of %d train rows is empty", valFrac, n)
		}
		perm := holdOutPerm(n, seed)
		valIdx, trIdx = slices.Clone(perm[:nVal]), slices.Clone(perm[nVal:])
		// Keep both parts in key order.
		sort.Ints(valIdx)
		sort.Ints(trIdx)
	}
	out := make(map[int]Split, len(layers))
	for _, l := range layers {
		var sp Split
		x, y, _, err := train.Matrix(l)
		if err != nil {
			return nil, err
		}
		if val == nil {
			sp.TrainX, sp.TrainY = x.SelectRows(trIdx), pick(y, trIdx)
			sp.ValX, sp.ValY = x.SelectRows(valIdx), pick(y, valIdx)
		} else {
			sp.TrainX, sp.TrainY = x, y
			if sp.ValX, sp.ValY, _, err = val.Matrix(l); err != nil {
				return nil, err
			}
		}
		if sp.TestX, sp.TestY, _, err = test.Matrix(l); err != nil {
			return nil, err
		}
		out[l] = sp
	}
	return out, nil
}

func pick(y, idx []int) []int {
	out := make([]int, len(idx))
	for i, j := range idx {
		out[i] = y[j]
	}
	return out
}

func overlap(a, b map[string]int) (string, int) {
	n, first := 0, ""
	for k := range a {
		if _, ok := b[k]; ok {
			if n == 0 || k < first {
				first = k
			}
			n++
		}
	}
	return first, n
}
