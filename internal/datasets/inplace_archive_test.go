package datasets

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strings"
	"testing"
)

// archiveFolder is a folder tree inside a wrapper folder, with splits
// interleaved in archive order, folder entries, a hidden file and a file
// that is not an image: what the readers must skip.
func archiveFolder(t testing.TB) []entry {
	var es []entry
	es = append(es, entry{name: "photos/", dir: true}, entry{name: "photos/README.txt", data: []byte("hello")})
	for i := range 30 {
		split := "train"
		if i%4 == 3 {
			split = "test"
		}
		class := []string{"cat", "dog", "émeu"}[i%3]
		img := testImage(6+i%3, 5, gradient(i))
		data := pngBytes(t, img)
		if i%2 == 0 {
			data = jpegBytes(t, img)
		}
		es = append(es, entry{name: fmt.Sprintf("photos/%s/%s/%03d.png", split, class, i), data: data})
		if i == 7 {
			es = append(es, entry{name: fmt.Sprintf("photos/%s/%s/.hidden.png", split, class), data: []byte("not read")})
		}
	}
	return es
}

// sameRecords checks that two reads of one source gave the same records:
// keys, splits, labels and encoded bytes.
func sameRecords(t *testing.T, want, got map[string][]Item) {
	t.Helper()
	index := func(m map[string][]Item) map[string]Item {
		out := map[string]Item{}
		for _, items := range m {
			for _, it := range items {
				if _, dup := out[it.Key]; dup {
					t.Errorf("record %s read twice", it.Key)
				}
				out[it.Key] = it
			}
		}
		return out
	}
	w, g := index(want), index(got)
	if len(w) == 0 || len(g) != len(w) {
		t.Fatalf("%d records read in place, %d by the whole-archive reader", len(g), len(w))
	}
	for k, a := range w {
		b, ok := g[k]
		if !ok || a.Split != b.Split || a.Label != b.Label || !bytes.Equal(a.Encoded, b.Encoded) {
			t.Errorf("record %s: in place %+v, whole archive split %s label %d (%d bytes)", k, b.Split, a.Split, a.Label, len(a.Encoded))
		}
	}
}

// TestFolderArchiveInPlaceMatchesLocal reads a folder .zip, .tar and
// .tar.gz both ways: whole, as Inspect does, and in place, cut into
// many small units. The records must be the same.
func TestFolderArchiveInPlaceMatchesLocal(t *testing.T) {
	defer func(z, r int64) { ZipUnitBytes, TarRangeBytes = z, r }(ZipUnitBytes, TarRangeBytes)
	ZipUnitBytes, TarRangeBytes = 1024, 8192 // a train range holds test members
	es := archiveFolder(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name     string
		data     []byte
		minUnits int
	}{
		{"f.zip", zipBytes(t, es), 6},
		{"f.tar", tarBytes(t, false, es), 6},
		{"f.tar.gz", tarBytes(t, true, es), 2}, // a tar.gz is one unit per split
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, filepath.Join(dir, c.name), c.data)
			whole, err := Inspect(context.Background(), Spec{Name: "folder", Format: FormatFolder}, p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			l, err := InspectFolderArchive(context.Background(), p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Units) < c.minUnits {
				t.Errorf("%d units, want at least %d", len(l.Units), c.minUnits)
			}
			if fmt.Sprint(l.Classes) != fmt.Sprint(whole.Classes) {
				t.Errorf("classes %v, want %v", l.Classes, whole.Classes)
			}
			if fmt.Sprint(l.SplitCounts()) != fmt.Sprint(whole.SplitCounts()) {
				t.Errorf("counts %v, want %v", l.SplitCounts(), whole.SplitCounts())
			}
			sameRecords(t, readAll(t, whole), readAll(t, l))
		})
	}
}

// TestFolderZipInPlaceChanged: a zip replaced by another after the units
// were made is refused naming the member, its offset and what to do, not
// read as the wrong images.
func TestFolderZipInPlaceChanged(t *testing.T) {
	es := archiveFolder(t)
	p := writeFile(t, filepath.Join(t.TempDir(), "f.zip"), zipBytes(t, es))
	l, err := InspectFolderArchive(context.Background(), p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The same members with one image's bytes changed: offsets shift.
	es[3].data = append(bytes.Clone(es[3].data), 0)
	writeFile(t, p, zipBytes(t, es))
	var errs []string
	for _, u := range l.Units {
		if err := ReadUnit(context.Background(), u, discardItems); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) == 0 {
		t.Fatal("every unit read a changed zip without an error")
	}
	mustContain(t, fmt.Errorf("%s", errs[0]), p, "local header at byte", "rerun the download stage with --force")
}

// TestReadZipLocalChecks: the local entry reader checks what the
// central directory promised: the name, the CRC-32, the method.
func TestReadZipLocalChecks(t *testing.T) {
	data := []byte("some image bytes")
	local := func(name string, method uint16) []byte {
		var b bytes.Buffer
		h := make([]byte, 30)
		binary.LittleEndian.PutUint32(h, zipLocalSig)
		binary.LittleEndian.PutUint16(h[8:], method)
		binary.LittleEndian.PutUint16(h[26:], uint16(len(name)))
		b.Write(h)
		b.WriteString(name)
		b.Write(data)
		return b.Bytes()
	}
	m := ZipMember{Name: "train/a/x.png", Offset: 4096, CSize: int64(len(data)), USize: int64(len(data)), Method: zip.Store, CRC32: crc32.ChecksumIEEE(data)}
	got, err := readZipLocal(context.Background(), "a.zip", bytes.NewReader(local(m.Name, 0)), m)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %q, %v", got, err)
	}
	_, err = readZipLocal(context.Background(), "a.zip", bytes.NewReader(local("train/a/y.png", 0)), m)
	mustContain(t, err, "a.zip", "member train/a/x.png (local header at byte 4096)", `names "train/a/y.png"`)
	bad := m
	bad.CRC32++
	_, err = readZipLocal(context.Background(), "a.zip", bytes.NewReader(local(m.Name, 0)), bad)
	mustContain(t, err, "a.zip", "CRC-32", "corrupt")
	bad = m
	bad.Method = 12
	_, err = readZipLocal(context.Background(), "a.zip", bytes.NewReader(local(m.Name, 12)), bad)
	mustContain(t, err, "compression method 12", "repack")
	bad = m
	bad.USize = 200 << 20
	_, err = readZipLocal(context.Background(), "a.zip", bytes.NewReader(local(m.Name, 8)), bad)
	mustContain(t, err, "zip bomb")
}

// TestZipProbeOffsets: the offsets the probe finds are where archive/zip
// itself reads each local header.
func TestZipProbeOffsets(t *testing.T) {
	b := zipBytes(t, archiveFolder(t))
	probe := &zipProbe{r: bytes.NewReader(b)}
	zr, err := zip.NewReader(probe, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		off, err := probe.headerOffset("f.zip", f)
		if err != nil {
			t.Fatal(err)
		}
		if binary.LittleEndian.Uint32(b[off:]) != zipLocalSig || !strings.HasPrefix(string(b[off+30:]), f.Name) {
			t.Fatalf("%s: no local header of it at byte %d", f.Name, off)
		}
		data, _ := f.DataOffset()
		extra := int64(binary.LittleEndian.Uint16(b[off+28:]))
		if want := off + 30 + int64(len(f.Name)) + extra; data != want {
			t.Fatalf("%s: data at %d, header at %d gives %d", f.Name, data, off, want)
		}
	}
}

func FuzzZipLocal(f *testing.F) {
	data := []byte("some image bytes")
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create("train/a/x.png")
	w.Write(data)
	zw.Close()
	f.Add(b.Bytes(), "train/a/x.png", int64(30), int64(16), uint16(8), crc32.ChecksumIEEE(data))
	f.Add(b.Bytes(), "train/a/x.png", int64(16), int64(16), uint16(0), uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, name string, csize, usize int64, method uint16, crc uint32) {
		if csize < 0 || usize < 0 {
			return // readFolderZipInPlace refuses these before
		}
		m := ZipMember{Name: name, CSize: csize, USize: usize, Method: method, CRC32: crc}
		ctx, h := withHeld(context.Background())
		defer h.release()
		out, err := readZipLocal(ctx, "f.zip", bytes.NewReader(b), m)
		if err == nil && int64(len(out)) != usize {
			t.Fatalf("%d bytes read, the directory says %d", len(out), usize)
		}
	})
}
