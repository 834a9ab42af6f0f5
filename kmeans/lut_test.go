package kmeans

import (
	"math"
	"math/rand/v2"
	"testing"
)

func bruteRGB(r, g, b int, centres []float64) int {
	j, _ := bruteNearest([]float64{float64(r), float64(g), float64(b)}, centres, 3)
	return j
}

// Every one of the 2^24 colours against brute force, with few centres that
// include duplicates and centres placed to create exact ties.
func TestLUTExhaustive(t *testing.T) {
	if testing.Short() {
		t.Skip("exhaustive 2^24 comparison skipped in -short mode")
	}
	rng := rand.New(rand.NewPCG(15, 16))
	centres := make([][3]float32, 0, 12)
	for len(centres) < 8 {
		centres = append(centres, [3]float32{float32(2 * rng.IntN(128)), float32(2 * rng.IntN(128)), float32(2 * rng.IntN(128))})
	}
	centres = append(centres, centres[3], [3]float32{10.5, 200.25, 33}, [3]float32{0, 0, 0}, [3]float32{255, 255, 255})
	lut, err := NewLUT(centres)
	if err != nil {
		t.Fatal(err)
	}
	flat := Flatten3(centres)
	for c := 0; c < 1<<24; c++ {
		r, g, b := c>>16, c>>8&255, c&255
		if got, want := int(lut.Lookup(uint8(r), uint8(g), uint8(b))), bruteRGB(r, g, b, flat); got != want {
			t.Fatalf("colour (%d,%d,%d): lut %d, brute force %d", r, g, b, got, want)
		}
	}
}

func TestLUTSampledK512(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, tc := range []struct {
		name   string
		centre func() [3]float32
	}{
		{"integer-centres", func() [3]float32 {
			return [3]float32{float32(rng.IntN(256)), float32(rng.IntN(256)), float32(rng.IntN(256))}
		}},
		{"float-centres-clustered", func() [3]float32 {
			return [3]float32{float32(100 + 40*rng.NormFloat64()), float32(120 + 30*rng.NormFloat64()), float32(90 + 50*rng.NormFloat64())}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			centres := make([][3]float32, 512)
			for j := range centres {
				centres[j] = tc.centre()
			}
			centres[100] = centres[7] // a duplicate: index 7 must win
			lut, err := NewLUT(centres)
			if err != nil {
				t.Fatal(err)
			}
			flat := Flatten3(centres)
			var colours [][3]int
			for i := 0; i < 200000; i++ {
				colours = append(colours, [3]int{rng.IntN(256), rng.IntN(256), rng.IntN(256)})
			}
			// Midpoints of centre pairs and their neighbours: on and near
			// the Voronoi boundaries.
			for i := 0; i < 20000; i++ {
				a, b := centres[rng.IntN(512)], centres[rng.IntN(512)]
				var m [3]int
				for q := range m {
					m[q] = int(math.Round(float64(a[q]+b[q]) / 2))
				}
				for _, dq := range [][3]int{{0, 0, 0}, {1, 0, 0}, {-1, 0, 0}, {0, 1, 0}, {0, 0, -1}, {1, 1, 1}} {
					colours = append(colours, [3]int{m[0] + dq[0], m[1] + dq[1], m[2] + dq[2]})
				}
			}
			ties := 0
			for _, c := range colours {
				if c[0] < 0 || c[1] < 0 || c[2] < 0 || c[0] > 255 || c[1] > 255 || c[2] > 255 {
					continue
				}
				want := bruteRGB(c[0], c[1], c[2], flat)
				got := int(lut.Lookup(uint8(c[0]), uint8(c[1]), uint8(c[2])))
				if got != want {
					t.Fatalf("colour %v: lut %d, brute force %d", c, got, want)
				}
				// Count exact ties between distinct centres to show the test meets them.
				_, d0 := bruteNearest([]float64{float64(c[0]), float64(c[1]), float64(c[2])}, flat, 3)
				for j := range centres {
					if j != want && centres[j] != centres[want] {
						e0, e1, e2 := float64(c[0])-flat[3*j], float64(c[1])-flat[3*j+1], float64(c[2])-flat[3*j+2]
						if e0*e0+e1*e1+e2*e2 == d0 {
							ties++
							break
						}
					}
				}
			}
			t.Logf("%d colours checked, %d exact ties between distinct centres", len(colours), ties)
			if tc.name == "integer-centres" && ties == 0 {
				t.Fatalf("no exact ties exercised")
			}
			pix := []byte{0, 0, 0, 255, 255, 255, 12, 200, 99}
			dst := make([]uint16, 3)
			if err := lut.Map(pix, dst); err != nil {
				t.Fatal(err)
			}
			for i := range dst {
				if dst[i] != lut.Lookup(pix[3*i], pix[3*i+1], pix[3*i+2]) {
					t.Fatalf("Map and Lookup disagree on pixel %d", i)
				}
			}
		})
	}
}

func TestLUTErrors(t *testing.T) {
	if _, err := NewLUT(nil); err == nil {
		t.Fatal("NewLUT(nil) succeeded")
	}
	if _, err := NewLUT([][3]float32{{1, float32(math.NaN()), 2}}); err == nil {
		t.Fatal("NewLUT with NaN succeeded")
	}
	lut, err := NewLUT([][3]float32{{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	if err := lut.Map([]byte{1, 2, 3}, make([]uint16, 2)); err == nil {
		t.Fatal("Map with a wrong dst length succeeded")
	}
}
