package kmeans

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// checkHistogram compares h with the colour counts want of total pixels,
// and its points with its colours.
func checkHistogram(t *testing.T, h *Histogram, want map[uint32]uint64, total uint64) {
	t.Helper()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if h.Len() != len(want) || h.Total() != total {
		t.Fatalf("len %d total %d, want %d %d", h.Len(), h.Total(), len(want), total)
	}
	for i, c := range h.Colours {
		if h.Counts[i] != want[c] {
			t.Fatalf("colour %#x: count %d, want %d", c, h.Counts[i], want[c])
		}
	}
	x, w := h.Points()
	for i, c := range h.Colours {
		if x[3*i] != float32(c>>16) || x[3*i+1] != float32(c>>8&255) || x[3*i+2] != float32(c&255) || w[i] != float64(h.Counts[i]) {
			t.Fatalf("point %d does not match colour %#x", i, c)
		}
	}
}

func TestHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	pix := make([]byte, 3*300000)
	for i := range pix {
		pix[i] = byte(rng.IntN(40)) // ~64000 colours, many repeats
	}
	want := map[uint32]uint64{}
	for i := 0; i < len(pix); i += 3 {
		want[uint32(pix[i])<<16|uint32(pix[i+1])<<8|uint32(pix[i+2])]++
	}
	check := func(t *testing.T, h *Histogram) { checkHistogram(t, h, want, uint64(len(pix)/3)) }
	t.Run("one-add", func(t *testing.T) {
		var h Histogram
		if err := h.Add(pix); err != nil {
			t.Fatal(err)
		}
		check(t, &h)
	})
	t.Run("many-adds-and-merges", func(t *testing.T) {
		// Images of 1024 pixels into 3 accumulators, merged pairwise, with a
		// JSON round trip (as a Beam coder would) in the middle.
		accs := make([]*Histogram, 3)
		for i := range accs {
			accs[i] = &Histogram{}
		}
		for i, img := 0, 0; i < len(pix); i, img = i+3072, img+1 {
			if err := accs[img%3].Add(pix[i:min(i+3072, len(pix))]); err != nil {
				t.Fatal(err)
			}
		}
		buf, err := json.Marshal(accs[1])
		if err != nil {
			t.Fatal(err)
		}
		var decoded Histogram
		if err := json.Unmarshal(buf, &decoded); err != nil {
			t.Fatal(err)
		}
		if err := accs[2].Merge(&decoded); err != nil {
			t.Fatal(err)
		}
		// And a msgpack round trip, as the palette stage stores it.
		mp, err := msgpack.Marshal(accs[2])
		if err != nil {
			t.Fatal(err)
		}
		var fromMsgpack Histogram
		if err := msgpack.Unmarshal(mp, &fromMsgpack); err != nil {
			t.Fatal(err)
		}
		if err := accs[0].Merge(&fromMsgpack); err != nil {
			t.Fatal(err)
		}
		check(t, accs[0])
	})
	t.Run("add-colour", func(t *testing.T) {
		var h Histogram
		for c, n := range want {
			if err := h.AddColour(c, n); err != nil {
				t.Fatal(err)
			}
		}
		check(t, &h)
	})
}

func TestHistogramErrors(t *testing.T) {
	var h Histogram
	if err := h.Add([]byte{1, 2}); err == nil {
		t.Fatal("Add of 2 bytes succeeded")
	}
	if err := h.AddColour(1<<24, 1); err == nil {
		t.Fatal("AddColour of a 25-bit colour succeeded")
	}
	bad := &Histogram{Colours: []uint32{5, 3}, Counts: []uint64{1, 1}, Sorted: 2}
	if err := h.Merge(bad); err == nil {
		t.Fatal("Merge of an unsorted histogram succeeded")
	}
	if err := h.Merge(&Histogram{Colours: []uint32{1}}); err == nil {
		t.Fatal("Merge of mismatched lengths succeeded")
	}
}
