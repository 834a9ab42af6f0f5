package datasets

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// cifarArchive builds an official-layout cifar-10-binary.tar.gz from the
// shared exact subset and returns its path and the two batch files' bytes.
func cifarArchive(t *testing.T) (string, []byte, []byte) {
	t.Helper()
	dir := sharedData(t, "cifar10-exact-subset")
	train, err := os.ReadFile(filepath.Join(dir, "data_batch_1_first4000.bin"))
	if err != nil {
		t.Fatal(err)
	}
	test, err := os.ReadFile(filepath.Join(dir, "test_batch_first1000.bin"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := os.ReadFile(filepath.Join(dir, "batches.meta.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tgz := tarBytes(t, true, []entry{
		{name: "cifar-10-batches-bin", dir: true},
		{name: "cifar-10-batches-bin/data_batch_1.bin", data: train},
		{name: "cifar-10-batches-bin/batches.meta.txt", data: meta},
		{name: "cifar-10-batches-bin/test_batch.bin", data: test},
		{name: "cifar-10-batches-bin/readme.html", data: []byte("<html></html>")},
	})
	p := writeFile(t, filepath.Join(t.TempDir(), "cifar-10-binary.tar.gz"), tgz)
	return p, train, test
}

func TestCIFAR10Real(t *testing.T) {
	archive, train, test := cifarArchive(t)
	spec, err := Lookup("cifar10")
	if err != nil {
		t.Fatal(err)
	}

	// The same data as an archive, as a directory holding the archive, and
	// extracted.
	extracted := t.TempDir()
	writeFile(t, filepath.Join(extracted, "cifar-10-batches-bin", "data_batch_1.bin"), train)
	writeFile(t, filepath.Join(extracted, "cifar-10-batches-bin", "test_batch.bin"), test)
	meta, _ := os.ReadFile(filepath.Join(sharedData(t, "cifar10-exact-subset"), "batches.meta.txt"))
	writeFile(t, filepath.Join(extracted, "cifar-10-batches-bin", "batches.meta.txt"), meta)

	srcs := map[string]string{
		"archive":          archive,
		"dir with archive": filepath.Dir(archive),
		"extracted":        extracted,
		"extracted files":  filepath.Join(extracted, "cifar-10-batches-bin"),
	}
	for name, src := range srcs {
		t.Run(name, func(t *testing.T) {
			l, err := Inspect(context.Background(), spec, src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(l.Classes, cifar10Classes) {
				t.Fatalf("classes %v", l.Classes)
			}
			if len(l.Units) != 2 || l.Units[0].Split != "train" || l.Units[0].Count != 4000 || l.Units[1].Split != "test" || l.Units[1].Count != 1000 {
				t.Fatalf("units %+v", l.Units)
			}
			if got := l.SplitCounts(); got["train"] != 4000 || got["test"] != 1000 {
				t.Fatalf("split counts %v", got)
			}
			items := readAll(t, l)
			for split, raw := range map[string][]byte{"train": train, "test": test} {
				its := items[split]
				if len(its) != len(raw)/3073 {
					t.Fatalf("%s: %d items, want %d", split, len(its), len(raw)/3073)
				}
				want := make([]int, 10)
				got := make([]int, 10)
				for i, it := range its {
					rec := raw[i*3073 : (i+1)*3073]
					want[rec[0]]++
					img, err := Decode(it, Options{})
					if err != nil {
						t.Fatal(err)
					}
					got[img.Label]++
					if img.Key != indexKey(split, i) || img.H != 32 || img.W != 32 || img.C != 3 {
						t.Fatalf("%s %d: key %q %d×%d×%d", split, i, img.Key, img.H, img.W, img.C)
					}
					for j := range 1024 {
						for c := range 3 {
							if img.Pix[3*j+c] != rec[1+c*1024+j] {
								t.Fatalf("%s record %d pixel %d channel %d: %d, want %d", split, i, j, c, img.Pix[3*j+c], rec[1+c*1024+j])
							}
						}
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s per-class counts %v, want %v", split, got, want)
				}
			}
			if s := items["train"][17].Source; !bytes.Contains([]byte(s), []byte("data_batch_1.bin@record 17 (offset 52241)")) {
				t.Errorf("source %q", s)
			}
		})
	}
}

func TestCIFAR10Errors(t *testing.T) {
	spec, _ := Lookup("cifar10")
	ctx := context.Background()

	t.Run("size not a multiple of 3073", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "data_batch_1.bin"), make([]byte, 3073*2+100))
		_, err := Inspect(ctx, spec, dir, Options{})
		mustContain(t, err, "data_batch_1.bin", "6246 bytes", "3073")
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%v does not wrap ErrCorrupt", err)
		}
	})
	t.Run("truncated archive", func(t *testing.T) {
		archive, _, _ := cifarArchive(t)
		data, _ := os.ReadFile(archive)
		cut := writeFile(t, filepath.Join(t.TempDir(), "cifar-10-binary.tar.gz"), data[:len(data)*2/3])
		_, err := Inspect(ctx, spec, cut, Options{})
		mustContain(t, err, cut, "member cifar-10-batches-bin/", "at byte", "truncated or corrupt: delete it and download again")
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%v does not wrap ErrCorrupt", err)
		}
	})
	t.Run("label out of range", func(t *testing.T) {
		dir := t.TempDir()
		rec := make([]byte, 3073)
		rec[0] = 10
		writeFile(t, filepath.Join(dir, "test_batch.bin"), rec)
		l, err := Inspect(ctx, spec, dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = ReadUnit(ctx, l.Units[0], func(Item) error { return nil })
		mustContain(t, err, "test_batch.bin@record 0", "label 10")
	})
	t.Run("nothing there", func(t *testing.T) {
		_, err := Inspect(ctx, spec, t.TempDir(), Options{})
		mustContain(t, err, "cifar-10-binary.tar.gz", "fetch")
	})
	t.Run("emit error and cancel", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "test_batch.bin"), make([]byte, 3073*300))
		l, err := Inspect(ctx, spec, dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		stop := errors.New("stop")
		n := 0
		err = ReadUnit(ctx, l.Units[0], func(Item) error { n++; return stop })
		if err != stop || n != 1 {
			t.Errorf("emit error: got %v after %d items", err, n)
		}
		cctx, cancel := context.WithCancel(ctx)
		n = 0
		err = ReadUnit(cctx, l.Units[0], func(Item) error {
			if n++; n == 10 {
				cancel()
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) || n > 64 {
			t.Errorf("cancel: got %v after %d items", err, n)
		}
	})
}

func TestCIFAR100Generated(t *testing.T) {
	spec, _ := Lookup("cifar100")
	rec := func(coarse, fine byte, seed int) []byte {
		r := make([]byte, 3074)
		r[0], r[1] = coarse, fine
		for i := 2; i < len(r); i++ {
			r[i] = byte(i*seed + seed)
		}
		return r
	}
	var train, test []byte
	for i := range 7 {
		train = append(train, rec(byte(i%3), byte(i%5), i+1)...)
	}
	for i := range 3 {
		test = append(test, rec(2, byte(4-i), i+11)...)
	}
	fine := []byte("f0\nf1\nf2\nf3\nf4\n")
	coarse := []byte("c0\nc1\nc2\n")
	archive := writeFile(t, filepath.Join(t.TempDir(), "cifar-100-binary.tar.gz"), tarBytes(t, true, []entry{
		{name: "cifar-100-binary/coarse_label_names.txt", data: coarse},
		{name: "cifar-100-binary/fine_label_names.txt", data: fine},
		{name: "cifar-100-binary/test.bin", data: test},
		{name: "cifar-100-binary/train.bin", data: train},
	}))
	for _, label := range []string{"", "fine", "coarse"} {
		t.Run("label="+label, func(t *testing.T) {
			l, err := Inspect(context.Background(), spec, archive, Options{CIFAR100Label: label})
			if err != nil {
				t.Fatal(err)
			}
			wantClasses := []string{"f0", "f1", "f2", "f3", "f4"}
			at := 1
			if label == "coarse" {
				wantClasses, at = []string{"c0", "c1", "c2"}, 0
			}
			if !slices.Equal(l.Classes, wantClasses) {
				t.Fatalf("classes %v, want %v", l.Classes, wantClasses)
			}
			items := readAll(t, l)
			for split, raw := range map[string][]byte{"train": train, "test": test} {
				if len(items[split]) != len(raw)/3074 {
					t.Fatalf("%s: %d items", split, len(items[split]))
				}
				for i, it := range items[split] {
					r := raw[i*3074:]
					if it.Label != int(r[at]) {
						t.Errorf("%s %d: label %d, want %d", split, i, it.Label, r[at])
					}
					if it.Pix[3*5+1] != r[2+1024+5] || it.Pix[3*1023+2] != r[2+2048+1023] {
						t.Errorf("%s %d: pixels not transposed to HWC", split, i)
					}
				}
			}
		})
	}
}
