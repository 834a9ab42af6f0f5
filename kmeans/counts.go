package kmeans

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"math/bits"
)

// NumColours is the number of 24-bit RGB colours.
const NumColours = 1 << 24

// CountsBytes is the memory a non-empty Counts holds: one uint32 per
// colour, 64 MiB, whatever the number of pixels counted (the high bits of
// a count past 2^32-1, a map, are the only other state: one entry per
// colour counted more than four billion times).
const CountsBytes = 4 * NumColours

// Counts is a dense colour histogram: one count per 24-bit RGB colour
// (packed r<<16 | g<<8 | b). Unlike Histogram, whose size follows the
// pixels added until they are compacted, its memory is fixed at
// CountsBytes from the first Add: the palette's workers and driver hold
// one each, however many images they count. The zero value is empty and
// holds nothing. It is not safe for concurrent use.
type Counts struct {
	lo []uint32          // [NumColours] low 32 bits of each count; nil while empty
	hi map[uint32]uint32 // colour → high 32 bits, for counts past 2^32-1
}

func (h *Counts) alloc() {
	if h.lo == nil {
		h.lo = make([]uint32, NumColours)
	}
}

// Add counts the pixels of pix, interleaved RGB bytes (HWC order, shape
// [P, 3]).
func (h *Counts) Add(pix []byte) error {
	if len(pix)%3 != 0 {
		return fmt.Errorf("kmeans: counts: %d bytes are not whole RGB pixels", len(pix))
	}
	if len(pix) == 0 {
		return nil
	}
	h.alloc()
	lo := h.lo[:NumColours]
	for i := 0; i+2 < len(pix); i += 3 {
		c := uint32(pix[i])<<16 | uint32(pix[i+1])<<8 | uint32(pix[i+2])
		lo[c]++
		if lo[c] == 0 {
			h.carry(c, 1)
		}
	}
	return nil
}

func (h *Counts) carry(c, n uint32) {
	if h.hi == nil {
		h.hi = map[uint32]uint32{}
	}
	h.hi[c] += n
}

// AddColour adds n to the count of colour c.
func (h *Counts) AddColour(c uint32, n uint64) error {
	if c >= NumColours {
		return fmt.Errorf("kmeans: counts: colour %#x exceeds 24 bits", c)
	}
	if n == 0 {
		return nil
	}
	if math.MaxUint64-h.Count(c) < n {
		return fmt.Errorf("kmeans: counts: the count of colour %#06x overflows 64 bits", c)
	}
	h.alloc()
	sum, carry := bits.Add32(h.lo[c], uint32(n), 0)
	h.lo[c] = sum
	if up := uint32(n>>32) + carry; up > 0 {
		h.carry(c, up)
	}
	return nil
}

// Count returns the count of colour c (< NumColours).
func (h *Counts) Count(c uint32) uint64 {
	if h.lo == nil {
		return 0
	}
	n := uint64(h.lo[c])
	if h.hi != nil {
		n |= uint64(h.hi[c]) << 32
	}
	return n
}

// Merge adds every count of o into h. o is not modified.
func (h *Counts) Merge(o *Counts) error {
	if o.lo == nil {
		return nil
	}
	for c, n := range o.lo {
		if n != 0 {
			if err := h.AddColour(uint32(c), uint64(n)); err != nil {
				return err
			}
		}
	}
	for c, up := range o.hi {
		if err := h.AddColour(c, uint64(up)<<32); err != nil {
			return err
		}
	}
	return nil
}

// Reset empties h, keeping its memory for reuse.
func (h *Counts) Reset() {
	clear(h.lo)
	h.hi = nil
}

// Distinct returns the number of colours with a positive count.
func (h *Counts) Distinct() int {
	n := 0
	for _, v := range h.lo {
		if v != 0 {
			n++
		}
	}
	for c, up := range h.hi {
		if up != 0 && h.lo[c] == 0 {
			n++ // a count of exactly a multiple of 2^32
		}
	}
	return n
}

// Total returns the number of pixels counted.
func (h *Counts) Total() uint64 {
	var t uint64
	for _, v := range h.lo {
		t += uint64(v)
	}
	for _, up := range h.hi {
		t += uint64(up) << 32
	}
	return t
}

// Bytes returns the memory h holds: 0 while empty, else CountsBytes plus
// 16 bytes per colour counted past 2^32-1.
func (h *Counts) Bytes() int {
	if h.lo == nil {
		return 0
	}
	return 4*len(h.lo) + 16*len(h.hi)
}

// Histogram returns h's distinct colours and counts as a sorted Histogram
// (12 bytes per distinct colour; for tests and small data).
func (h *Counts) Histogram() *Histogram {
	out := &Histogram{}
	h.each(func(c uint32, n uint64) {
		out.Colours = append(out.Colours, c)
		out.Counts = append(out.Counts, n)
	})
	out.Sorted = len(out.Colours)
	return out
}

// CountsOf returns the dense counts of a sparse histogram.
func CountsOf(s *Histogram) (*Counts, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("kmeans: counts: %w", err)
	}
	h := &Counts{}
	for i, c := range s.Colours {
		if err := h.AddColour(c, s.Counts[i]); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// each calls fn for every colour with a positive count, in colour order.
func (h *Counts) each(fn func(c uint32, n uint64)) {
	for c, v := range h.lo {
		if v != 0 || h.hi != nil {
			if n := h.Count(uint32(c)); n != 0 {
				fn(uint32(c), n)
			}
		}
	}
}

// The encoding of Counts (WriteTo, MergeFrom): the magic countsMagic, the
// uvarint number of distinct colours and the uvarint total, then for each
// distinct colour in increasing order the uvarint gap from the previous
// one (colour - previous - 1, the first counted from -1) and its uvarint
// count, then the CRC-32C (Castagnoli) of everything before it, 4 bytes
// little-endian. A full cube of small counts takes ~2 bytes a colour.
const countsMagic = "IGPTCOL1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteTo writes h's encoding to w.
func (h *Counts) WriteTo(w io.Writer) (int64, error) {
	cw := &crcWriter{w: bufio.NewWriterSize(w, 1<<16), crc: crc32.New(castagnoli)}
	var buf [2 * binary.MaxVarintLen64]byte
	cw.write([]byte(countsMagic))
	cw.write(binary.AppendUvarint(binary.AppendUvarint(buf[:0], uint64(h.Distinct())), h.Total()))
	prev := int64(-1)
	h.each(func(c uint32, n uint64) {
		b := binary.AppendUvarint(buf[:0], uint64(int64(c)-prev-1))
		cw.write(binary.AppendUvarint(b, n))
		prev = int64(c)
	})
	sum := cw.crc.Sum32()
	cw.write(binary.LittleEndian.AppendUint32(buf[:0], sum))
	if cw.err == nil {
		cw.err = cw.w.Flush()
	}
	return cw.n, cw.err
}

type crcWriter struct {
	w   *bufio.Writer
	crc hash.Hash32
	n   int64
	err error
}

func (c *crcWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	c.crc.Write(b)
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

// MergeFrom decodes an encoding written by WriteTo from r and adds its
// counts to h, checking every colour, the order, the totals, the checksum
// and that nothing follows; name labels errors, with the byte offset. On
// an error h holds part of r's counts and should be discarded.
func (h *Counts) MergeFrom(r io.Reader, name string) error {
	cr := &crcReader{r: bufio.NewReaderSize(r, 1<<16), crc: crc32.New(castagnoli)}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("kmeans: colour counts %s at byte %d: %s", name, cr.n, fmt.Sprintf(format, args...))
	}
	var magic [len(countsMagic)]byte
	for i := range magic {
		b, err := cr.ReadByte()
		if err != nil {
			return bad("truncated header (%v)", err)
		}
		magic[i] = b
	}
	if string(magic[:]) != countsMagic {
		return bad("not a colour-counts file (magic %q, want %q)", magic[:], countsMagic)
	}
	distinct, err := binary.ReadUvarint(cr)
	if err != nil {
		return bad("distinct colours: %v", err)
	}
	total, err := binary.ReadUvarint(cr)
	if err != nil {
		return bad("total: %v", err)
	}
	if distinct > NumColours {
		return bad("%d distinct colours, more than 2^24", distinct)
	}
	var sum uint64
	next := uint64(0) // smallest colour the next entry may have
	for i := uint64(0); i < distinct; i++ {
		gap, err := binary.ReadUvarint(cr)
		if err != nil {
			return bad("colour %d of %d: %v", i, distinct, err)
		}
		if gap >= NumColours || next+gap >= NumColours {
			return bad("colour %d of %d lies past 2^24 (gap %d after %#x)", i, distinct, gap, next)
		}
		c := next + gap
		n, err := binary.ReadUvarint(cr)
		if err != nil {
			return bad("count of colour %#06x: %v", c, err)
		}
		if n == 0 {
			return bad("colour %#06x has count 0", c)
		}
		if sum+n < sum {
			return bad("the counts overflow 64 bits at colour %#06x", c)
		}
		sum += n
		if err := h.AddColour(uint32(c), n); err != nil {
			return bad("%v", err)
		}
		next = c + 1
	}
	if sum != total {
		return bad("the counts add up to %d, the header says %d", sum, total)
	}
	want := cr.sum()
	var tail [4]byte
	for i := range tail {
		b, err := cr.ReadByte()
		if err != nil {
			return bad("truncated checksum (%v)", err)
		}
		tail[i] = b
	}
	if got := binary.LittleEndian.Uint32(tail[:]); got != want {
		return bad("checksum %08x, the data sums to %08x", got, want)
	}
	if _, err := cr.r.ReadByte(); err != io.EOF {
		if err == nil {
			return bad("data after the checksum")
		}
		return bad("%v", err)
	}
	return nil
}

// crcReader reads bytes one at a time, checksumming them in batches.
type crcReader struct {
	r       *bufio.Reader
	crc     hash.Hash32
	n       int64
	pending []byte // read but not yet checksummed
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	if len(c.pending) == cap(c.pending) {
		c.flush()
	}
	c.pending = append(c.pending, b)
	c.n++
	return b, nil
}

// sum returns the checksum of every byte read so far.
func (c *crcReader) sum() uint32 {
	c.flush()
	return c.crc.Sum32()
}

func (c *crcReader) flush() {
	c.crc.Write(c.pending)
	if c.pending == nil {
		c.pending = make([]byte, 0, 4096)
	}
	c.pending = c.pending[:0]
}
