package datasets

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

// checkSTL10Items compares the items read per split with the images and
// labels (nil: unlabelled) written: labels shifted to 0-based, pixels
// transposed from STL-10's column-major planes.
func checkSTL10Items(t *testing.T, items map[string][]Item, src map[string][2][]byte) {
	t.Helper()
	for split, xy := range src {
		x, y := xy[0], xy[1]
		for i, it := range items[split] {
			want := -1
			if y != nil {
				want = int(y[i]) - 1
			}
			if it.Label != want || it.Key != indexKey(split, i) {
				t.Errorf("%s %d: label %d key %q, want %d", split, i, it.Label, it.Key, want)
			}
			img, err := Decode(it, Options{ImageSize: [2]int{96, 96}})
			if err != nil {
				t.Fatal(err)
			}
			rec := x[i*stlRecord:]
			// Planes are column-major: plane c holds (row y, column x) at c*9216 + x*96 + y.
			for yy := range 96 {
				for xx := range 96 {
					for c := range 3 {
						if got, w := img.Pix[(yy*96+xx)*3+c], rec[c*9216+xx*96+yy]; got != w {
							t.Fatalf("%s %d pixel (%d,%d,%d) = %d, want %d", split, i, yy, xx, c, got, w)
						}
					}
				}
			}
		}
	}
}

func TestSTL10Generated(t *testing.T) {
	spec, _ := Lookup("stl10")
	rng := rand.New(rand.NewPCG(1, 2))
	images := func(n int) []byte {
		b := make([]byte, n*stlRecord)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	trainX, testX, unlX := images(3), images(2), images(2)
	trainY, testY := []byte{1, 10, 4}, []byte{2, 9}
	names := []byte("airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n")
	orders := map[string][]entry{
		// labels after images, and before
		"y after X": {
			{name: "stl10_binary", dir: true},
			{name: "stl10_binary/class_names.txt", data: names},
			{name: "stl10_binary/test_X.bin", data: testX},
			{name: "stl10_binary/test_y.bin", data: testY},
			{name: "stl10_binary/train_X.bin", data: trainX},
			{name: "stl10_binary/train_y.bin", data: trainY},
			{name: "stl10_binary/unlabeled_X.bin", data: unlX},
			{name: "stl10_binary/fold_indices.txt", data: []byte("0 1 2\n")},
		},
		"y before X": {
			{name: "stl10_binary/train_y.bin", data: trainY},
			{name: "stl10_binary/test_y.bin", data: testY},
			{name: "stl10_binary/unlabeled_X.bin", data: unlX},
			{name: "stl10_binary/train_X.bin", data: trainX},
			{name: "stl10_binary/test_X.bin", data: testX},
			{name: "stl10_binary/class_names.txt", data: names},
		},
	}
	for name, es := range orders {
		for _, kind := range []string{"archive", "extracted"} {
			t.Run(name+" "+kind, func(t *testing.T) {
				dir := t.TempDir()
				src := filepath.Join(dir, "stl10_binary.tar.gz")
				if kind == "archive" {
					writeFile(t, src, tarBytes(t, true, es))
				} else {
					writeTree(t, dir, es)
					src = dir
				}
				l, err := Inspect(context.Background(), spec, src, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(l.Classes, stl10Classes) {
					t.Fatalf("classes %v", l.Classes)
				}
				if c := l.SplitCounts(); c["train"] != 3 || c["test"] != 2 || c["unlabeled"] != 2 {
					t.Fatalf("counts %v", c)
				}
				checkSTL10Items(t, readAll(t, l), map[string][2][]byte{"train": {trainX, trainY}, "test": {testX, testY}, "unlabeled": {unlX, nil}})
			})
		}
	}
	t.Run("errors", func(t *testing.T) { checkSTL10Errors(t, spec, trainX) })
}

// checkSTL10Errors reads damaged STL-10 archives made from trainX (three
// records): each error names the file and what is wrong, and wraps
// ErrCorrupt.
func checkSTL10Errors(t *testing.T, spec Spec, trainX []byte) {
	cases := []struct {
		name string
		es   []entry
		want []string
	}{
		{"label out of range", []entry{{name: "stl10_binary/train_X.bin", data: trainX[:stlRecord]}, {name: "stl10_binary/train_y.bin", data: []byte{11}}},
			[]string{"train_X.bin@image 0", "label 11 is outside 1 … 10"}},
		{"short images", []entry{{name: "stl10_binary/train_X.bin", data: trainX[:stlRecord+5]}, {name: "stl10_binary/train_y.bin", data: []byte{1}}},
			[]string{"train_X.bin", "27653 bytes", "27648-byte"}},
		{"label count", []entry{{name: "stl10_binary/train_X.bin", data: trainX}, {name: "stl10_binary/train_y.bin", data: []byte{1}}},
			[]string{"train_y.bin", "1 labels", "3 images"}},
	}
	for _, c := range cases {
		src := writeFile(t, filepath.Join(t.TempDir(), "stl10_binary.tar.gz"), tarBytes(t, true, c.es))
		l, err := Inspect(context.Background(), spec, src, Options{})
		if err == nil {
			err = ReadUnit(context.Background(), l.Units[0], func(Item) error { return nil })
		}
		mustContain(t, err, c.want...)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v does not wrap ErrCorrupt", c.name, err)
		}
	}
}
