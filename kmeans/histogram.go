package kmeans

import (
	"errors"
	"fmt"
	"slices"
)

// Histogram counts distinct 24-bit RGB colours. Colours are packed as
// r<<16 | g<<8 | b. It is a Beam accumulator: all state is in exported
// fields of plain types, Add and Merge are its AddInput and
// MergeAccumulators, and any interleaving of them gives the same histogram.
//
// Colours[:Sorted] (with Counts[:Sorted]) is strictly increasing; the rest
// is an unsorted log of (colour, count) entries, folded in by Compact, which
// Add and Merge call once the log outgrows the sorted part. Memory is about
// 12 bytes per distinct colour plus the log.
type Histogram struct {
	Colours []uint32 // packed RGB; [:Sorted] strictly increasing
	Counts  []uint64 // count of each entry of Colours
	Sorted  int      // length of the sorted, deduplicated prefix
}

// minLog is the log length below which Add and Merge never compact.
const minLog = 1 << 20

// Add counts the pixels of pix, interleaved RGB bytes (HWC order, shape
// [P, 3]).
func (h *Histogram) Add(pix []byte) error {
	if len(pix)%3 != 0 {
		return fmt.Errorf("kmeans: histogram: %d bytes are not whole RGB pixels", len(pix))
	}
	for i := 0; i+2 < len(pix); i += 3 {
		h.Colours = append(h.Colours, uint32(pix[i])<<16|uint32(pix[i+1])<<8|uint32(pix[i+2]))
		h.Counts = append(h.Counts, 1)
	}
	h.maybeCompact()
	return nil
}

// AddColour adds n to the count of colour c (packed r<<16 | g<<8 | b).
func (h *Histogram) AddColour(c uint32, n uint64) error {
	if c >= 1<<24 {
		return fmt.Errorf("kmeans: histogram: colour %#x exceeds 24 bits", c)
	}
	if n > 0 {
		h.Colours = append(h.Colours, c)
		h.Counts = append(h.Counts, n)
		h.maybeCompact()
	}
	return nil
}

// Merge adds every count of o into h. o is not modified.
func (h *Histogram) Merge(o *Histogram) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("kmeans: histogram: merge: %w", err)
	}
	h.Colours = append(h.Colours, o.Colours...)
	h.Counts = append(h.Counts, o.Counts...)
	h.maybeCompact()
	return nil
}

// Validate checks the invariants of a histogram, e.g. one decoded from
// storage.
func (h *Histogram) Validate() error {
	if len(h.Colours) != len(h.Counts) {
		return fmt.Errorf("%d colours but %d counts", len(h.Colours), len(h.Counts))
	}
	if h.Sorted < 0 || h.Sorted > len(h.Colours) {
		return fmt.Errorf("sorted prefix %d outside [0, %d]", h.Sorted, len(h.Colours))
	}
	for i, c := range h.Colours {
		if c >= 1<<24 {
			return fmt.Errorf("colour %d is %#x, exceeds 24 bits", i, c)
		}
		if i > 0 && i < h.Sorted && c <= h.Colours[i-1] {
			return errors.New("sorted prefix is not strictly increasing")
		}
	}
	return nil
}

func (h *Histogram) maybeCompact() {
	if log := len(h.Colours) - h.Sorted; log >= minLog && log >= h.Sorted {
		h.Compact()
	}
}

// Compact folds the log into the sorted prefix, so that Colours is strictly
// increasing and Sorted == len(Colours).
func (h *Histogram) Compact() {
	m := len(h.Colours) - h.Sorted
	if m == 0 {
		return
	}
	logC, logN := h.Colours[h.Sorted:], h.Counts[h.Sorted:]
	// LSD radix sort of the log on 24-bit keys, two 12-bit passes.
	tmpC, tmpN := make([]uint32, m), make([]uint64, m)
	for shift := uint(0); shift < 24; shift += 12 {
		var count [1 << 12]int
		for _, c := range logC {
			count[(c>>shift)&0xfff]++
		}
		pos := 0
		for b := range count {
			count[b], pos = pos, pos+count[b]
		}
		for i, c := range logC {
			b := (c >> shift) & 0xfff
			tmpC[count[b]], tmpN[count[b]] = c, logN[i]
			count[b]++
		}
		logC, tmpC = tmpC, logC
		logN, tmpN = tmpN, logN
	}
	// Run-length encode the sorted log in place.
	r := 0
	for i := 0; i < m; i++ {
		if r > 0 && logC[r-1] == logC[i] {
			logN[r-1] += logN[i]
			continue
		}
		logC[r], logN[r] = logC[i], logN[i]
		r++
	}
	logC, logN = logC[:r], logN[:r]
	// Merge with the sorted prefix.
	a, an := h.Colours[:h.Sorted], h.Counts[:h.Sorted]
	outC := make([]uint32, 0, len(a)+r)
	outN := make([]uint64, 0, len(a)+r)
	i, j := 0, 0
	for i < len(a) && j < r {
		switch {
		case a[i] < logC[j]:
			outC, outN = append(outC, a[i]), append(outN, an[i])
			i++
		case a[i] > logC[j]:
			outC, outN = append(outC, logC[j]), append(outN, logN[j])
			j++
		default:
			outC, outN = append(outC, a[i]), append(outN, an[i]+logN[j])
			i++
			j++
		}
	}
	outC, outN = append(outC, a[i:]...), append(outN, an[i:]...)
	outC, outN = append(outC, logC[j:]...), append(outN, logN[j:]...)
	h.Colours, h.Counts, h.Sorted = outC, outN, len(outC)
}

// Len returns the number of distinct colours (compacting h).
func (h *Histogram) Len() int {
	h.Compact()
	return len(h.Colours)
}

// Total returns the number of pixels counted.
func (h *Histogram) Total() uint64 {
	var t uint64
	for _, n := range h.Counts {
		t += n
	}
	return t
}

// Points compacts h and returns its distinct colours as points x (shape
// [N, 3], R, G, B in 0..255, sorted by packed colour) with weights w (shape
// [N], the counts), ready for Fit or Lloyd.
func (h *Histogram) Points() (x []float32, w []float64) {
	h.Compact()
	x = make([]float32, 3*len(h.Colours))
	w = make([]float64, len(h.Colours))
	for i, c := range h.Colours {
		x[3*i], x[3*i+1], x[3*i+2] = float32(c>>16), float32(c>>8&0xff), float32(c&0xff)
		w[i] = float64(h.Counts[i])
	}
	return x, w
}

// Clone returns a deep copy of h.
func (h *Histogram) Clone() *Histogram {
	return &Histogram{Colours: slices.Clone(h.Colours), Counts: slices.Clone(h.Counts), Sorted: h.Sorted}
}
