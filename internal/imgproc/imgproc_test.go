package imgproc

import (
	"bytes"
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
