package datasets

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func gunzipFile(t *testing.T, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIDXReal(t *testing.T) {
	for _, name := range []string{"mnist", "fashion-mnist"} {
		t.Run(name, func(t *testing.T) {
			dir := sharedData(t, name)
			spec, err := Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			// The shared files are the ones the registry describes.
			for _, f := range spec.Files {
				if err := Verify(filepath.Join(dir, f.Name), f); err != nil {
					t.Errorf("Verify: %v", err)
				}
			}
			l, err := Inspect(context.Background(), spec, dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(l.Classes, spec.Classes) {
				t.Errorf("classes %v", l.Classes)
			}
			items := readAll(t, l)
			for _, sp := range []struct {
				split, prefix string
				n             int
			}{{"train", "train", 60000}, {"test", "t10k", 10000}} {
				its := items[sp.split]
				if len(its) != sp.n {
					t.Fatalf("%s: %d items, want %d", sp.split, len(its), sp.n)
				}
				labels := gunzipFile(t, filepath.Join(dir, sp.prefix+"-labels-idx1-ubyte.gz"))[8:]
				want := make([]int, 10)
				for _, l := range labels {
					want[l]++
				}
				got := make([]int, 10)
				for i, it := range its {
					if it.Label != int(labels[i]) || it.Key != indexKey(sp.split, i) {
						t.Fatalf("%s %d: label %d key %q, want %d", sp.split, i, it.Label, it.Key, labels[i])
					}
					got[it.Label]++
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s per-class counts %v, want %v", sp.split, got, want)
				}
				raw := gunzipFile(t, filepath.Join(dir, sp.prefix+"-images-idx3-ubyte.gz"))
				for _, i := range []int{0, 1, sp.n - 1} {
					img, err := Decode(its[i], Options{})
					if err != nil {
						t.Fatal(err)
					}
					if img.H != 28 || img.W != 28 || img.C != 1 || !bytes.Equal(img.Pix, raw[16+i*784:16+(i+1)*784]) {
						t.Errorf("%s image %d: %d×%d×%d, pixels differ from the idx bytes", sp.split, i, img.H, img.W, img.C)
					}
				}
				// Grey to RGB conversion on request.
				rgb, err := Decode(its[0], Options{Channels: 3})
				if err != nil {
					t.Fatal(err)
				}
				if rgb.C != 3 || rgb.Pix[3*200] != raw[16+200] || rgb.Pix[3*200+2] != raw[16+200] {
					t.Errorf("grey to RGB conversion wrong")
				}
			}
		})
	}
}

// idxFiles makes the bytes of an idx images file and labels file.
func idxFiles(n, rows, cols int) (images, labels []byte) {
	images = binary.BigEndian.AppendUint32(nil, idxImagesMagic)
	for _, d := range []int{n, rows, cols} {
		images = binary.BigEndian.AppendUint32(images, uint32(d))
	}
	labels = binary.BigEndian.AppendUint32(nil, idxLabelsMagic)
	labels = binary.BigEndian.AppendUint32(labels, uint32(n))
	for i := range n {
		for j := range rows * cols {
			images = append(images, byte(i+j))
		}
		labels = append(labels, byte(i%10))
	}
	return images, labels
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestIDXErrors(t *testing.T) {
	spec, _ := Lookup("mnist")
	ctx := context.Background()
	images, labels := idxFiles(50, 28, 28)
	readErr := func(t *testing.T, dir string) error {
		t.Helper()
		l, err := Inspect(ctx, spec, dir, Options{})
		if err != nil {
			return err
		}
		for _, u := range l.Units {
			if err := ReadUnit(ctx, u, func(Item) error { return nil }); err != nil {
				return err
			}
		}
		return nil
	}
	cases := []struct {
		name           string
		images, labels []byte // file contents; gzipped when imagesGz
		imgName        string
		want           []string
		corrupt        bool
	}{
		{"ok raw", images, labels, "train-images-idx3-ubyte", nil, false},
		{"ok gz", gz(t, images), gz(t, labels), "train-images-idx3-ubyte.gz", nil, false},
		{"truncated raw", images[:16+784*20+100], labels, "train-images-idx3-ubyte",
			[]string{"train-images-idx3-ubyte", "image 20 of 50 at uncompressed byte 15696", "truncated or corrupt"}, true},
		{"truncated gz", halve(gz(t, images)), gz(t, labels), "train-images-idx3-ubyte.gz",
			[]string{"train-images-idx3-ubyte.gz", "image ", "at uncompressed byte", "truncated or corrupt"}, true},
		{"count mismatch", images, labels[:8+49], "train-images-idx3-ubyte",
			[]string{"train-labels-idx1-ubyte", "label 49 of 50"}, true},
		{"trailing bytes", append(slices.Clone(images), 1, 2, 3), labels, "train-images-idx3-ubyte",
			[]string{"train-images-idx3-ubyte", "after the 50 records"}, true},
		{"bad magic", append([]byte{0, 0, 8, 2}, images[4:]...), labels, "train-images-idx3-ubyte",
			[]string{"train-images-idx3-ubyte", "magic number 0x00000802, want 0x00000803"}, true},
		{"html page", []byte("<html>not found</html>\n"), labels, "train-images-idx3-ubyte",
			[]string{"train-images-idx3-ubyte", "magic number"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, c.imgName), c.images)
			lname := "train-labels-idx1-ubyte"
			if filepath.Ext(c.imgName) == ".gz" {
				lname += ".gz"
			}
			writeFile(t, filepath.Join(dir, lname), c.labels)
			err := readErr(t, dir)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			mustContain(t, err, c.want...)
			if c.corrupt && !errors.Is(err, ErrCorrupt) {
				t.Errorf("%v does not wrap ErrCorrupt", err)
			}
		})
	}
	t.Run("missing labels", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "t10k-images-idx3-ubyte.gz"), gz(t, images))
		mustContain(t, readErr(t, dir), "t10k-labels-idx1-ubyte.gz is missing")
	})
	t.Run("no classes in spec", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "train-images-idx3-ubyte"), images)
		writeFile(t, filepath.Join(dir, "train-labels-idx1-ubyte"), labels)
		l, err := Inspect(ctx, Spec{Name: "digits", Format: FormatIDX}, dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(l.Classes, digitClasses) || l.Units[0].Count != 50 {
			t.Errorf("classes %v count %d", l.Classes, l.Units[0].Count)
		}
	})
}

func halve(b []byte) []byte { return b[:len(b)/2] }
