package datasets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// cifarJPEGTwins reads the exact test images 0–999, if present beside
// dir: they have JPEG twins test/<class>/0000… in test-batch order. It
// returns the records and the twin's key of each.
func cifarJPEGTwins(dir string) ([]byte, map[string][]byte) {
	var exact []byte
	if d := filepath.Join(filepath.Dir(dir), "cifar10-exact-subset", "test_batch_first1000.bin"); isFile(d) {
		exact, _ = os.ReadFile(d)
	}
	twin := map[string][]byte{} // key -> exact record
	perClass := map[int]int{}
	for i := 0; i+3073 <= len(exact); i += 3073 {
		label := int(exact[i])
		twin[fmt.Sprintf("test/%s/%04d.jpg", cifar10Classes[label], perClass[label])] = exact[i : i+3073]
		perClass[label]++
	}
	return exact, twin
}

// checkCIFARKeys checks that a split's keys are distinct, under their
// class's folder, with n images per class.
func checkCIFARKeys(t *testing.T, split string, its []Item, n int) {
	t.Helper()
	counts := make([]int, 10)
	keys := map[string]bool{}
	for _, it := range its {
		counts[it.Label]++
		keys[it.Key] = true
		if !strings.HasPrefix(it.Key, split+"/"+cifar10Classes[it.Label]+"/") {
			t.Fatalf("key %q label %d", it.Key, it.Label)
		}
	}
	if len(keys) != len(its) {
		t.Errorf("%s: %d distinct keys for %d items", split, len(keys), len(its))
	}
	for c, k := range counts {
		if k != n {
			t.Errorf("%s class %s: %d images, want %d", split, cifar10Classes[c], k, n)
		}
	}
}

func TestFolderCIFAR10JPEGReal(t *testing.T) {
	dir := sharedData(t, "cifar10-jpeg")
	spec, _ := Lookup("folder")
	archive := filepath.Join(dir, "CIFAR-10-images-jpeg.tar.gz")
	l, err := Inspect(context.Background(), spec, archive, Options{ImageSize: [2]int{32, 32}})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := os.ReadFile(filepath.Join(dir, "batches.meta.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// Sorted class folder names happen to be CIFAR-10's label order.
	if want, _ := readNames("meta", meta); !slices.Equal(l.Classes, want) || !slices.Equal(l.Classes, cifar10Classes) {
		t.Fatalf("classes %v, want %v", l.Classes, want)
	}
	if len(l.Units) != 2 || l.Units[0].Root != "" || l.Units[0].Members != nil {
		t.Fatalf("units %+v", l.Units)
	}
	if c := l.SplitCounts(); c["train"] != 50000 || c["test"] != 10000 {
		t.Fatalf("split counts %v", c)
	}
	items := readAll(t, l)

	exact, twin := cifarJPEGTwins(dir)

	var absErr, twins int
	decodeEvery := 1
	if testing.Short() {
		decodeEvery = 17
	}
	for split, n := range map[string]int{"train": 5000, "test": 1000} {
		its := items[split]
		checkCIFARKeys(t, split, its, n)
		// Decode them all (about 2 s), or a sample in -short mode.
		for i, it := range its {
			rec, isTwin := twin[it.Key]
			if i%decodeEvery != 0 && !isTwin {
				continue
			}
			img, err := Decode(it, Options{ImageSize: [2]int{32, 32}})
			if err != nil {
				t.Fatal(err)
			}
			if img.H != 32 || img.W != 32 || img.C != 3 || len(img.Pix) != 3072 || img.Key != it.Key {
				t.Fatalf("%s: %d×%d×%d", it.Key, img.H, img.W, img.C)
			}
			if isTwin {
				twins++
				for j := range 1024 {
					for c := range 3 {
						d := int(img.Pix[3*j+c]) - int(rec[1+c*1024+j])
						absErr += max(d, -d)
					}
				}
			}
		}
	}
	if exact != nil {
		if twins != 1000 {
			t.Errorf("found %d JPEG twins of the exact test images, want 1000", twins)
		}
		// README: JPEG q75 4:2:0, MAE 6.1 grey levels.
		if mae := float64(absErr) / float64(twins*3072); mae > 8 {
			t.Errorf("mean absolute error vs the exact pixels %.2f, want about 6.1", mae)
		} else {
			t.Logf("JPEG twins: mean absolute error %.2f grey levels", mae)
		}
	}
}

// folderFixture is a small image folder; it returns the entries and the
// expected pixels (HWC RGB) of each key.
func folderFixture(t *testing.T, wrapper string) ([]entry, map[string][]byte) {
	want := map[string][]byte{}
	var es []entry
	add := func(key string, enc func(*testing.T, *imageNRGBA) []byte, seed int) {
		img := testImage(4, 3, gradient(seed))
		es = append(es, entry{name: wrapper + key, data: enc(t, img)})
		want[key] = hwc(img)
	}
	es = append(es, entry{name: wrapper + "README.md", data: []byte("hello")})
	es = append(es, entry{name: wrapper + "train", dir: true}, entry{name: wrapper + "train/cat", dir: true})
	add("train/cat/b.png", pngEnc, 1)
	add("train/cat/a.PNG", pngEnc, 2)
	es = append(es, entry{name: wrapper + "train/cat/notes.txt", data: []byte("not an image")})
	es = append(es, entry{name: wrapper + "train/cat/.DS_Store", data: []byte{0, 1}})
	add("train/dog/c.png", pngEnc, 3)
	add("train/dog/sub/d.png", pngEnc, 4)
	add("test/cat/e.png", pngEnc, 5)
	add("test/dog/f.png", pngEnc, 6)
	add("test/eel/g.png", pngEnc, 7)
	es = append(es, entry{name: wrapper + "test/eel/h.jpeg", data: jpegEnc(t, testImage(4, 3, gradient(8)))})
	want["test/eel/h.jpeg"] = nil // lossy: checked loosely
	return es, want
}

type imageNRGBA = image.NRGBA

func pngEnc(t *testing.T, img *imageNRGBA) []byte  { return pngBytes(t, img) }
func jpegEnc(t *testing.T, img *imageNRGBA) []byte { return jpegBytes(t, img) }

func TestFolderGenerated(t *testing.T) {
	spec, _ := Lookup("folder")
	ctx := context.Background()
	for _, wrapper := range []string{"", "photos/"} {
		es, want := folderFixture(t, wrapper)
		for _, kind := range []string{"dir", "tar", "tar.gz", "tgz", "zip"} {
			t.Run(fmt.Sprintf("%s wrapper=%q", kind, wrapper), func(t *testing.T) {
				tmp := t.TempDir()
				src := filepath.Join(tmp, "src."+kind)
				switch kind {
				case "dir":
					writeTree(t, src, es)
				case "tar":
					writeFile(t, src, tarBytes(t, false, es))
				case "tar.gz", "tgz":
					writeFile(t, src, tarBytes(t, true, es))
				case "zip":
					writeFile(t, src, zipBytes(t, es))
				}
				l, err := Inspect(ctx, spec, src, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(l.Classes, []string{"cat", "dog", "eel"}) {
					t.Fatalf("classes %v", l.Classes)
				}
				if c := l.SplitCounts(); c["train"] != 4 || c["test"] != 4 || len(c) != 2 {
					t.Fatalf("split counts %v", c)
				}
				wantUnits := 5 // one per (split, class)
				if strings.HasPrefix(kind, "t") {
					wantUnits = 2 // one per split
				}
				if len(l.Units) != wantUnits {
					t.Fatalf("%d units, want %d: %+v", len(l.Units), wantUnits, l.Units)
				}
				items := readAll(t, l)
				var keys []string
				for split, its := range items {
					for _, it := range its {
						keys = append(keys, it.Key)
						class := strings.Split(it.Key, "/")[1]
						if it.Split != split || l.Classes[it.Label] != class {
							t.Errorf("%s: split %s label %d", it.Key, it.Split, it.Label)
						}
						if !strings.Contains(it.Source, wrapper+it.Key) {
							t.Errorf("source %q does not name %s", it.Source, wrapper+it.Key)
						}
						img, err := Decode(it, Options{})
						if err != nil {
							t.Fatal(err)
						}
						if img.H != 3 || img.W != 4 || img.C != 3 {
							t.Fatalf("%s: %d×%d×%d", it.Key, img.H, img.W, img.C)
						}
						if w := want[it.Key]; w != nil && !bytes.Equal(img.Pix, w) {
							t.Errorf("%s: pixels %v, want %v", it.Key, img.Pix, w)
						}
					}
				}
				slices.Sort(keys)
				wantKeys := make([]string, 0, len(want))
				for k := range want {
					wantKeys = append(wantKeys, k)
				}
				slices.Sort(wantKeys)
				if !slices.Equal(keys, wantKeys) {
					t.Errorf("keys %v, want %v", keys, wantKeys)
				}
				// Units that list their members give them sorted.
				for _, u := range l.Units {
					if u.Members != nil && !slices.IsSortedFunc(u.Members, func(a, b string) int { return strings.Compare(a, b) }) {
						t.Errorf("members not sorted: %v", u.Members)
					}
				}
			})
		}
	}
}

func TestFolderCancelAndHints(t *testing.T) {
	es, _ := folderFixture(t, "")
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "f.tar.gz"), tarBytes(t, true, es))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Inspect(ctx, Spec{Format: FormatFolder}, src, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Inspect with a cancelled context: %v", err)
	}
	l, err := Inspect(context.Background(), Spec{Format: FormatFolder}, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ReadUnit(ctx, l.Units[0], discardItems); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadUnit with a cancelled context: %v", err)
	}
	// A directory that holds the archive rather than the tree.
	_, err = Inspect(context.Background(), Spec{Format: FormatFolder}, dir, Options{})
	mustContain(t, err, "has no images", "it holds the archive f.tar.gz: give its path instead")
	_, err = Inspect(context.Background(), Spec{Format: FormatFolder}, src, Options{Channels: 2})
	mustContain(t, err, "Channels 2")
}

func TestFolderTarMembers(t *testing.T) {
	// A tar unit can be narrowed to a list of members.
	es, _ := folderFixture(t, "")
	src := writeFile(t, filepath.Join(t.TempDir(), "f.tar"), tarBytes(t, false, es))
	l, err := Inspect(context.Background(), Spec{Format: FormatFolder}, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	u := l.Units[0]
	if u.Split != "test" {
		t.Fatalf("first unit %s", u.Split)
	}
	u.Members, u.Count = []string{"test/eel/g.png", "test/cat/e.png"}, 2
	var keys []string
	if err := ReadUnit(context.Background(), u, func(it Item) error { keys = append(keys, it.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"test/cat/e.png", "test/eel/g.png"}) {
		t.Errorf("keys %v", keys)
	}
	u.Members = []string{"test/cat/nope.png"}
	mustContain(t, ReadUnit(context.Background(), u, func(Item) error { return nil }), "test/cat/nope.png", "missing")
}

func TestFolderErrors(t *testing.T) {
	ctx := context.Background()
	img := pngBytes(t, testImage(2, 2, gradient(0)))
	spec := Spec{Name: "folder", Format: FormatFolder}
	cases := []struct {
		name    string
		entries []entry
		want    []string
	}{
		{"empty class folder", []entry{
			{name: "train/dog/a.png", data: img}, {name: "train/cat", dir: true},
		}, []string{"train/cat/", "has no images; remove the folder or add images"}},
		{"class folder with only other files", []entry{
			{name: "train/dog/a.png", data: img}, {name: "train/cat/readme.txt", data: []byte("x")},
		}, []string{"train/cat/", "has no images"}},
		{"empty class folder in wrapper", []entry{
			{name: "w/train/dog/a.png", data: img}, {name: "w/test/dog/b.png", data: img}, {name: "w/test/cat", dir: true},
		}, []string{"w/test/cat/", "has no images"}},
		{"image under split", []entry{
			{name: "train/dog/a.png", data: img}, {name: "train/stray.png", data: img},
		}, []string{"train/stray.png", "directly under a split folder"}},
		{"image at top", []entry{
			{name: "train/dog/a.png", data: img}, {name: "top.jpg", data: img},
		}, []string{"top.jpg", "outside any <split>/<class>/ folder"}},
		{"no images", []entry{
			{name: "train/dog/a.txt", data: img},
		}, []string{"has no images", "<split>/<class>/<image>"}},
	}
	for _, c := range cases {
		for _, kind := range []string{"dir", "tar.gz", "zip"} {
			t.Run(c.name+" "+kind, func(t *testing.T) {
				src := filepath.Join(t.TempDir(), "x."+kind)
				switch kind {
				case "dir":
					writeTree(t, src, c.entries)
				case "tar.gz":
					writeFile(t, src, tarBytes(t, true, c.entries))
				case "zip":
					writeFile(t, src, zipBytes(t, c.entries))
				}
				_, err := Inspect(ctx, spec, src, Options{})
				mustContain(t, err, append(c.want, src)...)
			})
		}
	}
}

func TestFolderTruncated(t *testing.T) {
	ctx := context.Background()
	spec := Spec{Name: "folder", Format: FormatFolder}
	var es []entry
	for i := range 40 {
		// Noisy images so that the archive does not compress to nothing.
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		img := testImage(16, 16, func(x, y int) color.NRGBA {
			v := rng.Uint32()
			return color.NRGBA{uint8(v >> 24), uint8(v >> 16), uint8(v >> 8), 255}
		})
		es = append(es, entry{name: fmt.Sprintf("train/c%d/%02d.png", i%2, i), data: pngBytes(t, img)})
	}
	t.Run("tar.gz", func(t *testing.T) {
		data := tarBytes(t, true, es)
		src := writeFile(t, filepath.Join(t.TempDir(), "x.tar.gz"), data[:len(data)/2])
		_, err := Inspect(ctx, spec, src, Options{})
		mustContain(t, err, src, "byte", "truncated or corrupt: delete it and download again")
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%v does not wrap ErrCorrupt", err)
		}
	})
	t.Run("tar inside a member", func(t *testing.T) {
		data := tarBytes(t, false, es)
		src := writeFile(t, filepath.Join(t.TempDir(), "x.tar"), data[:512+300])
		_, err := Inspect(ctx, spec, src, Options{})
		mustContain(t, err, src, "member train/c0/00.png at byte 300 of", "truncated or corrupt")
	})
	t.Run("tar at a member boundary", func(t *testing.T) {
		first := tarBytes(t, false, es[:1])
		src := writeFile(t, filepath.Join(t.TempDir(), "x.tar"), first[:len(first)-1024])
		_, err := Inspect(ctx, spec, src, Options{})
		mustContain(t, err, src, "after member train/c0/00.png", "end-of-archive marker", "truncated or corrupt")
	})
	t.Run("zip", func(t *testing.T) {
		data := zipBytes(t, es)
		src := writeFile(t, filepath.Join(t.TempDir(), "x.zip"), data[:len(data)-100])
		_, err := Inspect(ctx, spec, src, Options{})
		mustContain(t, err, src, fmt.Sprintf("%d bytes", len(data)-100), "truncated or corrupt")
	})
	t.Run("zip member damaged", func(t *testing.T) {
		data := zipBytes(t, es)
		// Flip bytes in the middle of the first member's data.
		for i := 60; i < 90; i++ {
			data[i] ^= 0xff
		}
		src := writeFile(t, filepath.Join(t.TempDir(), "x.zip"), data)
		l, err := Inspect(ctx, spec, src, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = ReadUnit(ctx, l.Units[0], func(Item) error { return nil })
		mustContain(t, err, src, "member train/c0/00.png", "truncated or corrupt")
	})
	t.Run("source changed after Inspect", func(t *testing.T) {
		dir := t.TempDir()
		writeTree(t, dir, es)
		l, err := Inspect(ctx, spec, dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, "train", "c0", "00.png"))
		err = ReadUnit(ctx, l.Units[0], func(Item) error { return nil })
		mustContain(t, err, "00.png")
	})
}
