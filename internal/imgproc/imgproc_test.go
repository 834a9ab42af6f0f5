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
