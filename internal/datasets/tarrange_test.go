package datasets

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rangeTar writes a flat tar of n JPEG-named members of random sizes (0 to
// 3000 bytes of random data; every fifth with a name over 100 bytes, which
// tar.Writer stores with a PAX header) and returns its path and the member
// names in order.
func rangeTar(t *testing.T, n int) (string, []string) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	var names []string
	for i := range n {
		name := fmt.Sprintf("ILSVRC2012_val_%08d.JPEG", i+1)
		if i%5 == 0 {
			name = strings.Repeat("d", 120) + "/" + name
		}
		data := make([]byte, r.IntN(3001))
		for j := range data {
			data[j] = byte(r.IntN(256))
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
		names = append(names, name)
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "val.tar")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, names
}

// TestTarRangesReadEveryMemberOnce cuts a tar into ranges much smaller
// than its members and reads each range the way a worker does: together
// the ranges read every member exactly once, in order, wherever the cuts
// fall (in headers, in PAX records, in data).
func TestTarRangesReadEveryMemberOnce(t *testing.T) {
	path, names := rangeTar(t, 300)
	fi, _ := os.Stat(path)
	for _, tc := range []struct{ rangeBytes, lookback int64 }{{1000, 4096}, {4096, 4096}, {7777, 1 << 20}, {64 << 10, 512}} {
		t.Run(fmt.Sprintf("range%d_lookback%d", tc.rangeBytes, tc.lookback), func(t *testing.T) {
			defer func(a, b int64) { TarRangeBytes, tarRangeLookback = a, b }(TarRangeBytes, tarRangeLookback)
			TarRangeBytes, tarRangeLookback = tc.rangeBytes, tc.lookback
			units := splitTarRange(Unit{Path: path}, fi.Size())
			if want := int((fi.Size() + tc.rangeBytes - 1) / tc.rangeBytes); len(units) != want {
				t.Fatalf("%d units, want %d", len(units), want)
			}
			var got []string
			for i, u := range units {
				if i > 0 && u.RangeStart != units[i-1].RangeEnd || i == 0 && u.RangeStart != 0 {
					t.Fatalf("unit %d: range [%d, %d) does not follow the last", i, u.RangeStart, u.RangeEnd)
				}
				err := eachTarRangeImage(context.Background(), u, func(name string, _ []byte) error {
					got = append(got, name)
					return nil
				})
				if err != nil {
					t.Fatalf("unit %d [%d, %d): %v", i, u.RangeStart, u.RangeEnd, err)
				}
			}
			if units[len(units)-1].RangeEnd != fi.Size() {
				t.Fatalf("the last range ends at %d, the file at %d", units[len(units)-1].RangeEnd, fi.Size())
			}
			if !slices.Equal(got, names) {
				t.Fatalf("read %d members, want %d once each in order (first difference at %d)", len(got), len(names), firstDiff(got, names))
			}
		})
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestImageNetValTarIsCut: planning an ImageNet source whose validation
// tar has the official size (6,744,924,160 bytes; a sparse file here,
// never read) gives one unit per class tar and the validation tar in 51
// ranges of 128 MiB, without reading the validation tar.
func TestImageNetValTarIsCut(t *testing.T) {
	dir := t.TempDir()
	var inner, outer bytes.Buffer
	tw := tar.NewWriter(&inner)
	tw.WriteHeader(&tar.Header{Name: "n01440764_1.JPEG", Mode: 0o644, Size: 3, Typeflag: tar.TypeReg})
	tw.Write([]byte("abc"))
	tw.Close()
	ow := tar.NewWriter(&outer)
	for _, c := range []string{"n01440764", "n01443537"} {
		ow.WriteHeader(&tar.Header{Name: c + ".tar", Mode: 0o644, Size: int64(inner.Len()), Typeflag: tar.TypeReg})
		ow.Write(inner.Bytes())
	}
	ow.Close()
	os.WriteFile(filepath.Join(dir, ImageNetTrainTar), outer.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "validation_labels.txt"), []byte("n01440764\n"), 0o644)
	f, err := os.Create(filepath.Join(dir, ImageNetValTar))
	if err != nil {
		t.Fatal(err)
	}
	const valSize = 6744924160
	if err := f.Truncate(valSize); err != nil {
		t.Skipf("cannot make a sparse file: %v", err)
	}
	f.Close()
	l, err := inspectImageNet(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var val []Unit
	for _, u := range l.Units {
		if u.Split == "test" {
			val = append(val, u)
		}
	}
	if len(l.Units)-len(val) != 2 || len(val) != 51 {
		t.Fatalf("%d class-tar units and %d validation units; want 2 and 51 (6.74 GB in 128 MiB ranges)", len(l.Units)-len(val), len(val))
	}
	if val[0].RangeStart != 0 || val[50].RangeEnd != valSize {
		t.Fatalf("ranges [%d, …, %d), want [0, …, %d)", val[0].RangeStart, val[50].RangeEnd, valSize)
	}
}
