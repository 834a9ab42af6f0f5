package datasets

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"testing"
)

func TestDecode(t *testing.T) {
	rgba := testImage(5, 4, gradient(3))
	pngRGB := pngBytes(t, rgba)
	grey := image.NewGray(image.Rect(0, 0, 5, 4))
	for i := range grey.Pix {
		grey.Pix[i] = byte(i * 9)
	}
	pngGrey := pngBytes(t, grey)
	pal := image.NewPaletted(image.Rect(0, 0, 2, 1), color.Palette{color.NRGBA{10, 20, 30, 255}, color.NRGBA{200, 100, 50, 255}})
	pal.Pix = []byte{1, 0}
	pngPal := pngBytes(t, pal)
	jpg := jpegBytes(t, rgba)

	greyRGB := make([]byte, 0, 60)
	for _, v := range grey.Pix {
		greyRGB = append(greyRGB, v, v, v)
	}
	rgbGrey := make([]byte, 20)
	for i := range rgbGrey {
		p := hwc(rgba)
		rgbGrey[i] = luma(p[3*i], p[3*i+1], p[3*i+2])
	}

	cases := []struct {
		name    string
		it      Item
		opt     Options
		h, w, c int
		pix     []byte // nil: not checked
		bad     string // expected reason, "" if fine
	}{
		{"png rgb", Item{Encoded: pngRGB}, Options{}, 4, 5, 3, hwc(rgba), ""},
		{"png rgb to grey", Item{Encoded: pngRGB}, Options{Channels: 1}, 4, 5, 1, rgbGrey, ""},
		{"png grey to rgb", Item{Encoded: pngGrey}, Options{}, 4, 5, 3, greyRGB, ""},
		{"png grey", Item{Encoded: pngGrey}, Options{Channels: 1}, 4, 5, 1, grey.Pix, ""},
		{"png paletted", Item{Encoded: pngPal}, Options{}, 1, 2, 3, []byte{200, 100, 50, 10, 20, 30}, ""},
		{"jpeg", Item{Encoded: jpg}, Options{ImageSize: [2]int{4, 5}}, 4, 5, 3, nil, ""},
		{"raw rgb", Item{Pix: hwc(rgba), H: 4, W: 5, C: 3}, Options{}, 4, 5, 3, hwc(rgba), ""},
		{"raw rgb to grey", Item{Pix: hwc(rgba), H: 4, W: 5, C: 3}, Options{Channels: 1}, 4, 5, 1, rgbGrey, ""},
		{"wrong size", Item{Encoded: pngRGB}, Options{ImageSize: [2]int{5, 5}}, 0, 0, 0, nil, "image is 4×5 (h×w), want 5×5"},
		{"raw wrong size", Item{Pix: hwc(rgba), H: 4, W: 5, C: 3}, Options{ImageSize: [2]int{32, 32}}, 0, 0, 0, nil, "image is 4×5 (h×w), want 32×32"},
		{"garbage", Item{Encoded: []byte("not an image")}, Options{}, 0, 0, 0, nil, "not a readable PNG or JPEG image"},
		{"truncated png", Item{Encoded: pngRGB[:len(pngRGB)/2]}, Options{}, 0, 0, 0, nil, "bad png image"},
		{"raw short", Item{Pix: []byte{1, 2}, H: 4, W: 5, C: 3}, Options{}, 0, 0, 0, nil, "raw pixels"},
		{"empty", Item{}, Options{}, 0, 0, 0, nil, "neither pixels nor an encoded image"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.it.Key, c.it.Label, c.it.Source = "train/x/1.png", 7, "src.tar:train/x/1.png"
			for _, onBad := range []string{"", "fail", "skip"} {
				opt := c.opt
				opt.OnBad = onBad
				img, err := Decode(c.it, opt)
				if c.bad == "" {
					if err != nil {
						t.Fatal(err)
					}
					if img.H != c.h || img.W != c.w || img.C != c.c || img.Key != c.it.Key || img.Label != 7 || len(img.Pix) != c.h*c.w*c.c {
						t.Fatalf("got %d×%d×%d key %q label %d (%d bytes)", img.H, img.W, img.C, img.Key, img.Label, len(img.Pix))
					}
					if c.pix != nil && !bytes.Equal(img.Pix, c.pix) {
						t.Errorf("pixels %v, want %v", img.Pix, c.pix)
					}
					if c.it.Pix != nil && &img.Pix[0] == &c.it.Pix[0] {
						t.Errorf("raw pixels not copied")
					}
					continue
				}
				mustContain(t, err, c.bad, c.it.Source)
				if got := errors.Is(err, ErrSkipped); got != (onBad == "skip") {
					t.Errorf("OnBad %q: errors.Is(ErrSkipped) = %v: %v", onBad, got, err)
				}
			}
		})
	}
}

func TestDecodeBadOptions(t *testing.T) {
	pngRGB := pngBytes(t, testImage(5, 4, gradient(3)))
	for _, o := range []Options{{Channels: 2}, {OnBad: "ignore"}, {ImageSize: [2]int{3, 0}}, {CIFAR100Label: "both"}} {
		if _, err := Decode(Item{Encoded: pngRGB}, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

// TestDecodeHugeHeader: a PNG header claiming 100000×100000 pixels is
// refused before decoding.
func TestDecodeHugeHeader(t *testing.T) {
	b := pngBytes(t, testImage(5, 4, gradient(3)))
	copy(b[16:24], []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0})
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	_, err := Decode(Item{Encoded: b, Source: "x"}, Options{})
	mustContain(t, err, "too large")
}
