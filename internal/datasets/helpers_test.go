package datasets

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sharedData returns the shared real-data folder, or skips the test.
func sharedData(t testing.TB, sub string) string {
	t.Helper()
	dir := os.Getenv("IGPT_SHARED_DATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "data")
	}
	p := filepath.Join(dir, sub)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("real data %s not available (set IGPT_SHARED_DATA to the shared data folder to run this test): %v", p, err)
	}
	return p
}

// entry is a file or directory of a generated archive or tree.
type entry struct {
	name string
	data []byte
	dir  bool
}

func tarBytes(t testing.TB, gz bool, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w = &buf
	var zw *gzip.Writer
	var tw *tar.Writer
	if gz {
		zw = gzip.NewWriter(w)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(w)
	}
	mt := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: mt, Typeflag: tar.TypeReg}
		if e.dir {
			h = &tar.Header{Name: strings.TrimSuffix(e.name, "/") + "/", Mode: 0o755, ModTime: mt, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func zipBytes(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		if e.dir {
			if _, err := zw.Create(strings.TrimSuffix(e.name, "/") + "/"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		w, err := zw.Create(e.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, p string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeTree(t testing.TB, dir string, entries []entry) {
	t.Helper()
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(e.name))
		if e.dir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		writeFile(t, p, e.data)
	}
}

// testImage is a w×h image whose pixel (x, y) has colour f(x, y).
func testImage(w, h int, f func(x, y int) color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, f(x, y))
		}
	}
	return img
}

func gradient(seed int) func(x, y int) color.NRGBA {
	return func(x, y int) color.NRGBA {
		return color.NRGBA{uint8(x*7 + seed), uint8(y*11 + seed), uint8(x*y + seed), 255}
	}
}

func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jpegBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// hwc returns an NRGBA image's pixels as HWC RGB.
func hwc(img *image.NRGBA) []byte {
	b := img.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*3)
	for i := 0; i < len(img.Pix); i += 4 {
		out = append(out, img.Pix[i], img.Pix[i+1], img.Pix[i+2])
	}
	return out
}

// readAll reads every unit of a layout, after a JSON round trip of each unit
// (as the pipeline does), and returns the items per split in unit order.
func readAll(t testing.TB, l Layout) map[string][]Item {
	t.Helper()
	out := map[string][]Item{}
	for _, u := range l.Units {
		b, err := json.Marshal(u)
		if err != nil {
			t.Fatal(err)
		}
		var u2 Unit
		if err := json.Unmarshal(b, &u2); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(u, u2) {
			t.Fatalf("unit changed in a JSON round trip:\n%+v\n%+v", u, u2)
		}
		err = ReadUnit(context.Background(), u2, func(it Item) error {
			out[it.Split] = append(out[it.Split], it)
			return nil
		})
		if err != nil {
			t.Fatalf("ReadUnit(%s %s): %v", u.Split, u.Path, err)
		}
	}
	return out
}

// mustContain fails unless err's message contains every part.
func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}
