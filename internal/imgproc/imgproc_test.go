package imgproc

import (
	"bytes"
	"image/png"
	"testing"
)

func TestResize(t *testing.T) {
	tests := []struct {
		name    string
		pix     []byte
		h, w, c int
		nh, nw  int
		want    []byte
	}{
		{"identity", []byte{1, 2, 3, 4}, 2, 2, 1, 2, 2, []byte{1, 2, 3, 4}},
		{"2x box", []byte{0, 2, 10, 20, 4, 6, 30, 40, 1, 1, 1, 1, 1, 1, 1, 1}, 4, 4, 1, 2, 2, []byte{3, 25, 1, 1}},
		{"rgb 2x", []byte{10, 20, 30, 30, 40, 50, 50, 60, 70, 70, 80, 90}, 2, 2, 3, 1, 1, []byte{40, 50, 60}},
		{"upscale repeats", []byte{7, 9}, 1, 2, 1, 2, 4, []byte{7, 7, 9, 9, 7, 7, 9, 9}},
		{"3 to 2 area", []byte{0, 30, 90}, 1, 3, 1, 1, 2, []byte{10, 70}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resize(tc.pix, tc.h, tc.w, tc.c, tc.nh, tc.nw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := Resize([]byte{1}, 2, 2, 1, 1, 1); err == nil {
		t.Fatal("bad shape accepted")
	}
}

func TestToRGB(t *testing.T) {
	got, _ := ToRGB([]byte{5, 9}, 1)
	if !bytes.Equal(got, []byte{5, 5, 5, 9, 9, 9}) {
		t.Fatal(got)
	}
	if _, err := ToRGB([]byte{1, 2}, 2); err == nil {
		t.Fatal("2 channels accepted")
	}
}

func TestShortSideCrop(t *testing.T) {
	// 2×4 image, one channel: columns 0..3 hold 10, 20, 30, 40. Short side
	// 2 → side 1: scale to 1×2 (means 15, 35), centre crop takes column
	// 0 of 2 ((2-1)/2 = 0): 15.
	pix := []byte{10, 20, 30, 40, 10, 20, 30, 40}
	tests := []struct {
		h, w, side int
		want       []byte
	}{
		{2, 4, 1, []byte{15}},
		{2, 4, 2, []byte{20, 30, 20, 30}}, // 2×4 kept, centre 2×2
		{4, 2, 2, []byte{10, 20, 30, 40}}, // tall: rows 1..2 of 4 (values by row)
	}
	for _, tc := range tests {
		in := pix
		if tc.h == 4 {
			in = []byte{0, 0, 10, 20, 30, 40, 0, 0}
		}
		got, err := ShortSideCrop(in, tc.h, tc.w, 1, tc.side)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%dx%d to %d: %v, %v; want %v", tc.h, tc.w, tc.side, got, err, tc.want)
		}
	}
	if _, err := ShortSideCrop(pix, 2, 4, 1, 0); err == nil {
		t.Error("side 0 accepted")
	}
}

// TestGridPNG draws a grid and reads it back: tile positions with gaps
// and the separator, grey for a short tile's missing pixels, white gaps.
func TestGridPNG(t *testing.T) {
	red, blue := []byte{255, 0, 0}, []byte{0, 0, 255}
	tests := []struct {
		name  string
		g     Grid
		rows  [][]Tile
		w, h  int
		probe map[[2]int][3]uint8 // (x, y) → colour
	}{
		{"gap", Grid{TileH: 1, TileW: 1, Scale: 2, Gap: 1}, [][]Tile{{{RGB: red}, {RGB: blue}}}, 6, 3,
			map[[2]int][3]uint8{{0, 0}: {255, 0, 0}, {1, 1}: {255, 0, 0}, {2, 0}: {255, 255, 255}, {3, 0}: {0, 0, 255}, {0, 2}: {255, 255, 255}}},
		{"short tile is grey", Grid{TileH: 2, TileW: 1, Scale: 1}, [][]Tile{{{RGB: red}}}, 1, 2,
			map[[2]int][3]uint8{{0, 0}: {255, 0, 0}, {0, 1}: {128, 128, 128}}},
		{"blank", Grid{TileH: 1, TileW: 1, Scale: 1}, [][]Tile{{{Blank: true}, {RGB: blue}}}, 2, 1,
			map[[2]int][3]uint8{{0, 0}: {255, 255, 255}, {1, 0}: {0, 0, 255}}},
		{"sep", Grid{TileH: 1, TileW: 1, Scale: 1, Gap: 1, Sep: true}, [][]Tile{{{RGB: red}, {RGB: red}, {RGB: blue}}}, 10, 2,
			map[[2]int][3]uint8{{0, 0}: {255, 0, 0}, {1, 0}: {255, 255, 255}, {4, 0}: {255, 0, 0}, {8, 0}: {0, 0, 255}}},
	}
	for _, tc := range tests {
		b, err := tc.g.PNG(tc.rows)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r := img.Bounds(); r.Dx() != tc.w || r.Dy() != tc.h {
			t.Errorf("%s: %v, want %d×%d", tc.name, r, tc.w, tc.h)
		}
		for p, want := range tc.probe {
			r, g, b, _ := img.At(p[0], p[1]).RGBA()
			if got := [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)}; got != want {
				t.Errorf("%s: pixel %v = %v, want %v", tc.name, p, got, want)
			}
		}
	}
	if _, err := (Grid{TileH: 0, TileW: 1, Scale: 1}).PNG(nil); err == nil {
		t.Error("a 0-pixel tile was accepted")
	}
}

func TestSideBySide(t *testing.T) {
	got := SideBySide(nil, []byte{1, 2, 3}, 1, 1)
	if want := []byte{255, 255, 255, 1, 2, 3}; !bytes.Equal(got, want) {
		t.Errorf("SideBySide = %v, want %v", got, want)
	}
}
