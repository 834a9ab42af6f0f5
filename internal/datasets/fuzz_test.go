package datasets

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fuzz targets feed arbitrary bytes to every reader: they must return
// an error or items, never panic or hang. Run one with e.g.
//
//	go test -run='^$' -fuzz=FuzzFolderTar -fuzztime=20s ./internal/datasets

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func discardItems(Item) error { return nil }

func FuzzCIFARRecords(f *testing.F) {
	rec := make([]byte, 3073)
	rec[0] = 3
	f.Add(rec, false)
	f.Add(append(rec, rec[:100]...), false)
	f.Add(make([]byte, 3074*2), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, c100 bool) {
		format := FormatCIFAR10
		if c100 {
			format = FormatCIFAR100
		}
		cfg := cifarConfig{source: "f.bin", split: "train", format: format, fine: true, classes: 10}
		errf := func(err error) error { return ioErr("f.bin", "", err) }
		n, err := readCIFARRecords(context.Background(), bytes.NewReader(data), cfg, errf, func(it Item) error {
			if len(it.Pix) != 3072 || it.Label < 0 || it.Label >= 10 {
				t.Fatalf("bad item %d×%d×%d label %d", it.H, it.W, it.C, it.Label)
			}
			return nil
		})
		if err == nil && n != len(data)/cifarRecSize(format) {
			t.Fatalf("%d records from %d bytes", n, len(data))
		}
	})
}

func FuzzBinArchive(f *testing.F) {
	f.Add(tarBytes(f, true, []entry{
		{name: "cifar-10-batches-bin/batches.meta.txt", data: []byte("a\nb\n")},
		{name: "cifar-10-batches-bin/data_batch_1.bin", data: make([]byte, 3073)},
	}))
	f.Add(tarBytes(f, false, []entry{{name: "stl10_binary/train_y.bin", data: []byte{1}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := newTar("a.tar", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		match := func(b string) bool { return b == "test_batch.bin" || cifar10Batch.MatchString(b) }
		scanBinTar(context.Background(), ts, match, []string{"batches.meta.txt"}, quiet)
	})
}

func FuzzIDX(f *testing.F) {
	images, labels := idxFiles(3, 2, 2)
	f.Add(images, labels)
	f.Add(gz(f, images), gz(f, labels))
	f.Add(images[:20], labels)
	f.Fuzz(func(t *testing.T, images, labels []byte) {
		ctx := context.Background()
		is, err := newStream("images", bytes.NewReader(images), int64(len(images)))
		if err != nil {
			return
		}
		idim, err := checkIDX(is, idxImagesMagic)
		if err != nil {
			return
		}
		ls, err := newStream("labels", bytes.NewReader(labels), int64(len(labels)))
		if err != nil {
			return
		}
		ldim, err := checkIDX(ls, idxLabelsMagic)
		if err != nil {
			return
		}
		u := Unit{Split: "train", Classes: digitClasses}
		readIDXStreams(ctx, u, is, idim, ls, ldim, func(it Item) error {
			if len(it.Pix) != it.H*it.W || it.Label >= 10 {
				t.Fatalf("bad item")
			}
			return nil
		})
	})
}

func folderSeeds(f *testing.F) []entry {
	img := pngBytes(f, testImage(2, 2, gradient(1)))
	return []entry{
		{name: "w/train", dir: true},
		{name: "w/train/cat/a.png", data: img},
		{name: "w/train/dog/b.jpg", data: []byte("not really")},
		{name: "w/test/cat/c.PNG", data: img},
		{name: "w/test/cat/notes.txt", data: []byte("x")},
		{name: "w/test/dog", dir: true},
	}
}

// checkFolderLayout checks the invariants of an accepted layout.
func checkFolderLayout(t *testing.T, l Layout) {
	for _, u := range l.Units {
		if u.Count <= 0 || len(u.Classes) == 0 {
			t.Fatalf("bad unit %+v", u)
		}
	}
}

func FuzzFolderTar(f *testing.F) {
	es := folderSeeds(f)
	f.Add(tarBytes(f, false, es))
	f.Add(tarBytes(f, true, es))
	f.Add(tarBytes(f, false, es[1:2]))
	f.Fuzz(func(t *testing.T, data []byte) {
		maxDecodePixels = 1 << 16
		ctx := context.Background()
		ts, err := newTar("a.tar", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		l, err := inspectFolderTar(ctx, ts, quiet)
		if err != nil {
			return
		}
		checkFolderLayout(t, l)
		for _, u := range l.Units {
			ts, err := newTar("a.tar", bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatalf("second open failed: %v", err)
			}
			err = readFolderTar(ctx, u, ts, func(it Item) error {
				Decode(it, Options{OnBad: "skip"})
				return nil
			})
			if err != nil {
				t.Fatalf("Inspect accepted the archive but ReadUnit fails: %v", err)
			}
		}
	})
}

func FuzzFolderZip(f *testing.F) {
	es := folderSeeds(f)
	f.Add(zipBytes(f, es))
	f.Add(zipBytes(f, es[1:2]))
	f.Fuzz(func(t *testing.T, data []byte) {
		maxDecodePixels = 1 << 16
		ctx := context.Background()
		zr, err := newZip("a.zip", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		l, err := inspectFolderZip("a.zip", zr.Reader, quiet)
		if err != nil {
			return
		}
		checkFolderLayout(t, l)
		for _, u := range l.Units {
			// Member data may be corrupt (Inspect reads only the directory).
			readFolderZip(ctx, u, zr, func(it Item) error {
				Decode(it, Options{Channels: 1, ImageSize: [2]int{2, 2}})
				return nil
			})
		}
	})
}

func FuzzSTL10(f *testing.F) {
	f.Add(make([]byte, stlRecord), []byte{3}, true)
	f.Add(make([]byte, stlRecord+7), []byte{}, false)
	f.Fuzz(func(t *testing.T, images, labels []byte, labelled bool) {
		if !labelled {
			labels = nil
		} else if labels == nil {
			labels = []byte{}
		}
		cfg := stlConfig{source: "x.bin", split: "train", classes: 10, labels: labels}
		errf := func(err error) error { return ioErr("x.bin", "", err) }
		readSTLRecords(context.Background(), bytes.NewReader(images), cfg, errf, func(it Item) error {
			if len(it.Pix) != stlRecord || it.Label < -1 || it.Label >= 10 {
				t.Fatalf("bad item")
			}
			return nil
		})
	})
}

func FuzzDecode(f *testing.F) {
	f.Add(pngBytes(f, testImage(3, 2, gradient(2))), uint8(0))
	f.Add(jpegBytes(f, testImage(9, 9, gradient(2))), uint8(1))
	pal := pngBytes(f, testImage(1, 1, gradient(0)))
	f.Add(pal, uint8(2))
	f.Add([]byte("\x89PNG\r\n\x1a\n"), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		maxDecodePixels = 1 << 16
		opt := Options{Channels: []int{0, 1, 3}[mode%3], OnBad: "skip"}
		if mode&4 != 0 {
			opt.ImageSize = [2]int{2, 3}
		}
		img, err := Decode(Item{Encoded: data, Source: "x"}, opt)
		if err == nil && len(img.Pix) != img.H*img.W*img.C {
			t.Fatalf("%d bytes for %d×%d×%d", len(img.Pix), img.H, img.W, img.C)
		}
		// Raw pixels of any shape.
		if len(data) >= 3 {
			Decode(Item{Pix: data[3:], H: int(data[0]), W: int(data[1]), C: int(data[2] % 5)}, opt)
		}
	})
}

// FuzzWebDatasetShard: any bytes as a WebDataset tar shard give samples or
// an error naming the shard, never a panic.
func FuzzWebDatasetShard(f *testing.F) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range []struct{ name, data string }{{"000001.jpg", "\xff\xd8x"}, {"000001.cls", "3"}, {"000002.png", "p"}, {"000002.cls", "x"}} {
		tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(m.data))
	}
	tw.Close()
	f.Add(b.Bytes())
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "000000.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		err := readWebDatasetShard(context.Background(), Unit{Format: FormatWebDataset, Split: "train", Path: p}, func(it Item) error {
			if it.Key == "" || it.Encoded == nil {
				t.Fatalf("item without key or image: %+v", it)
			}
			return nil
		})
		if err != nil && !strings.Contains(err.Error(), p) {
			t.Fatalf("error does not name the shard: %v", err)
		}
	})
}

// FuzzNPZ: any bytes as a downsampled-ImageNet batch give images or an
// error naming the file, never a panic or a huge allocation.
func FuzzNPZ(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed.npz")
	writeNPZ(f, seed, 2, 2, []int64{1, 2}, zip.Store)
	if b, err := os.ReadFile(seed); err == nil {
		f.Add(b)
	}
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "train_data_batch_1.npz")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		err := readNPZUnit(context.Background(), Unit{Format: FormatNPZ, Split: "train", Path: p}, func(it Item) error {
			if len(it.Pix) != it.H*it.W*3 || it.Label < 0 || it.Label >= 1000 {
				t.Fatalf("bad item %d×%d label %d, %d bytes", it.H, it.W, it.Label, len(it.Pix))
			}
			return nil
		})
		if err != nil && !strings.Contains(err.Error(), p) {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
