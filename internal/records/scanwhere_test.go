package records

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// scanAll is Scan's records and error.
func scanAll(data []byte) ([]Image, error) {
	var out []Image
	err := Scan(bytes.NewReader(data), "s", func(x Image) error { out = append(out, x); return nil })
	return out, err
}

func TestScanWhere(t *testing.T) {
	imgs := sampleImages(6) // keys ka … kf
	data := writeShard(t, KindImage, imgs...)
	all, err := scanAll(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		keep func(string) bool
		want []string
	}{
		{"nil keeps all", nil, []string{"ka", "kb", "kc", "kd", "ke", "kf"}},
		{"none", func(string) bool { return false }, nil},
		{"some", func(k string) bool { return k == "kb" || k == "ke" }, []string{"kb", "ke"}},
		{"last", func(k string) bool { return k == "kf" }, []string{"kf"}},
	} {
		var got []string
		err := ScanWhere(bytes.NewReader(data), "s", c.keep, func(x Image) error {
			for _, a := range all {
				if a.Key == x.Key && !reflect.DeepEqual(a, x) {
					t.Errorf("%s: %s decoded as %+v, Scan gives %+v", c.name, x.Key, x, a)
				}
			}
			got = append(got, x.Key)
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
		}
	}
}

// TestScanWhereSkipsUndecoded: a skipped record's pixels are not
// decoded, so a record whose pixels do not match its size passes when
// skipped and fails when kept; a bad CRC fails either way.
func TestScanWhereSkipsUndecoded(t *testing.T) {
	bad := Image{Key: "bad", H: 2, W: 2, C: 3, Pix: []byte{1, 2, 3}} // 3 bytes, not 12
	var buf bytes.Buffer
	w, err := NewWriter(&buf, KindImage)
	if err != nil {
		t.Fatal(err)
	}
	w.kind = KindImage
	if err := w.frame(bad); err != nil { // past Write's kind check only; validate runs on read
		t.Fatal(err)
	}
	if err := w.Write(sampleImages(1)[0]); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	data := buf.Bytes()
	n := 0
	if err := ScanWhere(bytes.NewReader(data), "s", func(k string) bool { return k != "bad" }, func(Image) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("skipping the bad record: %d records, %v; want 1, nil", n, err)
	}
	var ce *CorruptError
	if err := ScanWhere(bytes.NewReader(data), "s", func(string) bool { return true }, func(Image) error { return nil }); !errors.As(err, &ce) {
		t.Fatalf("keeping the bad record: %v, want a CorruptError", err)
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)-1] ^= 1 // the last record's payload
	if err := ScanWhere(bytes.NewReader(flipped), "s", func(string) bool { return false }, func(Image) error { return nil }); !errors.As(err, &ce) {
		t.Fatalf("a flipped byte in a skipped record: %v, want a CorruptError (CRC)", err)
	}
}

// TestScanWhereAllocs: skipping a record allocates nothing but its key,
// however big its pixels; decoding it allocates them.
func TestScanWhereAllocs(t *testing.T) {
	var recs []any
	for i := 0; i < 50; i++ {
		recs = append(recs, Image{Key: "k", H: 64, W: 64, C: 3, Pix: make([]byte, 64*64*3)})
	}
	data := writeShard(t, KindImage, recs...)
	r, err := NewReader(bytes.NewReader(data), "s")
	if err != nil {
		t.Fatal(err)
	}
	var x Image
	r.NextWhere(&x, func(string) bool { return false }) // warm the decoder's buffer
	skip := testing.AllocsPerRun(20, func() {
		if ok, err := r.NextWhere(&x, func(string) bool { return false }); ok || err != nil {
			t.Fatal(ok, err)
		}
	})
	if skip > 6 {
		t.Errorf("skipping a record made %.0f allocations, want at most 6 (field names, key, frame header)", skip)
	}
	r, _ = NewReader(bytes.NewReader(data), "s")
	r.NextWhere(&x, func(string) bool { return false }) // warm the frame and decoder buffers
	var bytesSkipped, bytesKept uint64
	measure := func(keep bool) uint64 {
		var before, after runtimeMem
		before.read()
		for i := 0; i < 20; i++ {
			if _, err := r.NextWhere(&x, func(string) bool { return keep }); err != nil {
				t.Fatal(err)
			}
		}
		after.read()
		return after.total - before.total
	}
	bytesSkipped = measure(false)
	bytesKept = measure(true)
	if bytesSkipped*10 > bytesKept {
		t.Errorf("20 skipped 12 KB images allocated %d bytes, 20 kept %d: skipping should allocate < 1/10", bytesSkipped, bytesKept)
	}
}

func TestScanFileWhereCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.shard")
	if err := os.WriteFile(path, writeShard(t, KindImage, sampleImages(3)...), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := ScanFileWhere(ctx, path, func(string) bool { return false }, func(Image) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled scan that keeps nothing returned %v, want context.Canceled", err)
	}
}

// FuzzScanWhere: on any input, ScanWhere gives exactly the records of Scan
// that keep accepts, up to Scan's first error, and fails only where Scan
// fails.
func FuzzScanWhere(f *testing.F) {
	f.Add(writeShard(f, KindImage, sampleImages(3)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		keep := func(k string) bool { return len(k)%2 == 0 }
		all, scanErr := scanAll(data)
		var got []Image
		err := ScanWhere(bytes.NewReader(data), "s", keep, func(x Image) error { got = append(got, x); return nil })
		var want []Image
		for _, x := range all {
			if keep(x.Key) {
				want = append(want, x)
			}
		}
		if scanErr == nil && err != nil {
			t.Fatalf("Scan succeeded, ScanWhere failed: %v", err)
		}
		if len(got) < len(want) || (scanErr == nil && len(got) != len(want)) {
			t.Fatalf("ScanWhere kept %d records, Scan's filtered %d (Scan error %v, ScanWhere error %v)", len(got), len(want), scanErr, err)
		}
		for i := range want {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("record %d: ScanWhere %+v, Scan %+v", i, got[i], want[i])
			}
		}
		_ = io.EOF
	})
}
