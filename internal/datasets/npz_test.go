package datasets

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// npyBytes encodes a C-order array as .npy version 1.0.
func npyBytes(descr string, shape []int, data []byte) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh)
	for (10+len(dict)+1)%64 != 0 {
		dict += " "
	}
	dict += "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(dict)))
	b.WriteString(dict)
	b.Write(data)
	return b.Bytes()
}

// writeNPZ writes a downsampled-ImageNet batch: n images of side² planar
// RGB (pixel value = image index + plane*10 + position) and labels 1-based.
func writeNPZ(t testing.TB, path string, n, side int, labels []int64, method uint16) {
	t.Helper()
	row := 3 * side * side
	data := make([]byte, n*row)
	for i := range n {
		for j := range row {
			data[i*row+j] = byte(i + j)
		}
	}
	lab := make([]byte, 8*len(labels))
	for i, l := range labels {
		binary.LittleEndian.PutUint64(lab[8*i:], uint64(l))
	}
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, m := range []struct {
		name string
		data []byte
	}{{"labels.npy", npyBytes("<i8", []int{len(labels)}, lab)}, {"data.npy", npyBytes("|u1", []int{n, row}, data)}} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: m.name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(m.data)
	}
	zw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNPZSource(t *testing.T) {
	dir := t.TempDir()
	writeNPZ(t, filepath.Join(dir, "train_data_batch_1.npz"), 3, 2, []int64{1, 1000, 7}, zip.Store)
	writeNPZ(t, filepath.Join(dir, "val_data.npz"), 2, 2, []int64{5, 6}, zip.Deflate)
	spec, _ := Lookup("imagenet32")
	spec.H, spec.W = 2, 2 // the batches here are 2×2 (ReadUnit holds records to the spec's size)
	l, err := InspectInPlace(context.Background(), spec, dir, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Units) != 2 || len(l.Classes) != 1000 || l.Units[0].Split != "train" || l.Units[1].Split != "test" {
		t.Fatalf("layout %+v", l.Units)
	}
	var got []Item
	for _, u := range l.Units {
		if err := ReadUnit(context.Background(), u, func(it Item) error { got = append(got, it); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 5 {
		t.Fatalf("%d items, want 5", len(got))
	}
	// Image 1 of the train batch: planes R = 1+0..3, G = 1+4..7, B = 1+8..11;
	// pixel 0 interleaved is (1, 5, 9); label 1000 → 999.
	it := got[1]
	if it.Key != "train/train_data_batch_1/0000001" || it.Label != 999 || it.H != 2 || it.C != 3 ||
		it.Pix[0] != 1 || it.Pix[1] != 5 || it.Pix[2] != 9 || it.Pix[3] != 2 {
		t.Errorf("item %+v", it)
	}
	if got[3].Split != "test" || got[3].Label != 4 {
		t.Errorf("val item %+v", got[3])
	}
}

func TestNPZErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		n      int
		labels []int64
		want   string
	}{
		{"label out of range", 2, []int64{1, 1001}, "label 1001 is outside 1 … 1000"},
		{"count mismatch", 3, []int64{1, 2}, "3 rows but labels.npy 2 labels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".npz")
			writeNPZ(t, p, tc.n, 2, tc.labels, zip.Store)
			err := ReadUnit(context.Background(), Unit{Format: FormatNPZ, Split: "train", Path: p}, func(Item) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v; want it to name %s and say %q", err, p, tc.want)
			}
		})
	}
	bad := filepath.Join(dir, "bad.npz")
	os.WriteFile(bad, []byte("not a zip"), 0o644)
	if err := ReadUnit(context.Background(), Unit{Format: FormatNPZ, Split: "train", Path: bad}, func(Item) error { return nil }); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("not a zip: %v", err)
	}
}

// FuzzNPYHeader: any header bytes give a header or an error, never a panic
// or a huge allocation.
func FuzzNPYHeader(f *testing.F) {
	f.Add(npyBytes("|u1", []int{3, 12}, nil))
	f.Add(npyBytes("<i8", []int{5}, nil))
	f.Add([]byte("\x93NUMPY\x02\x00\xff\xff\xff\x7f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readNPYHeader(bytes.NewReader(b))
		if err == nil && h.descr == "" {
			t.Fatal("a header without descr was accepted")
		}
	})
}

func TestParseValLabels(t *testing.T) {
	classes := []string{"n01", "n02"}
	tests := []struct {
		file, raw string
		want      map[string]int
		err       string
	}{
		{"validation_labels.txt", "n02\nn01\n", map[string]int{"ILSVRC2012_val_00000001": 1, "ILSVRC2012_val_00000002": 0}, ""},
		{"LOC_val_solution.csv", "ImageId,PredictionString\nILSVRC2012_val_00000009,n01 1 2 3 4 n01 5 6 7 8\n", map[string]int{"ILSVRC2012_val_00000009": 0}, ""},
		{"validation_labels.txt", "n03\n", nil, `class "n03" is not one of the 2 train classes`},
		{"LOC_val_solution.csv", "ImageId,PredictionString\nno-comma\n", nil, "want ImageId,PredictionString"},
	}
	for _, tc := range tests {
		got, err := parseValLabels(tc.file, strings.NewReader(tc.raw), classIndex(classes))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.file) {
				t.Errorf("%s %q: error %v, want %q", tc.file, tc.raw, err, tc.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.file, got, err, tc.want)
		}
	}
}
