package kmeans

import (
	"bytes"
	"testing"
)

// FuzzCountsDecode: the colour-counts decoder (MergeFrom) never panics on
// any input, and what it accepts re-encodes to counts that decode to the
// same distinct colours and total.
func FuzzCountsDecode(f *testing.F) {
	for _, pix := range [][]byte{nil, {1, 2, 3}, {0, 0, 0, 255, 255, 255, 0, 0, 0}} {
		var h Counts
		if err := h.Add(pix); err != nil {
			f.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := h.WriteTo(&b); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	var h, back Counts // reused: a Counts is 64 MiB
	f.Fuzz(func(t *testing.T, data []byte) {
		h.Reset()
		if err := h.MergeFrom(bytes.NewReader(data), "fuzz"); err != nil {
			return
		}
		var b bytes.Buffer
		if _, err := h.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		back.Reset()
		if err := back.MergeFrom(&b, "again"); err != nil {
			t.Fatalf("re-encoding of accepted counts refused: %v", err)
		}
		if back.Distinct() != h.Distinct() || back.Total() != h.Total() {
			t.Fatalf("round trip: %d colours, total %d; want %d, %d", back.Distinct(), back.Total(), h.Distinct(), h.Total())
		}
	})
}
