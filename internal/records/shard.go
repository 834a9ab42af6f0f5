package records

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxFrame bounds a frame's payload so that a corrupt length field cannot
// make a reader allocate without limit.
const MaxFrame = 256 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ShardName returns the TFDS-style name of shard i of n of a split,
// e.g. "train-00003-of-00016.msgpack".
func ShardName(split string, i, n int) string {
	return fmt.Sprintf("%s-%05d-of-%05d.msgpack", split, i, n)
}

// CorruptError reports a damaged shard: where, and what was found there.
type CorruptError struct {
	File   string // shard name as given to NewReader
	Offset int64  // byte offset of the frame that failed
	Record int    // index of the record (0 = first after the header); -1 for the header
	Reason string
}

func (e *CorruptError) Error() string {
	what := fmt.Sprintf("record %d", e.Record)
	if e.Record < 0 {
		what = "header"
	}
	return fmt.Sprintf("records: %s: corrupt shard at byte offset %d (%s): %s; "+
		"the file is damaged: delete it (or its stage output) and rerun the stage that wrote it with --force",
		e.File, e.Offset, what, e.Reason)
}

// Writer writes framed records of one kind to an io.Writer.
type Writer struct {
	w     *bufio.Writer
	kind  Kind
	buf   bytes.Buffer
	enc   *msgpack.Encoder
	hdr   [8]byte
	n     int
	bytes int64
}

// WriterBuffer is the buffer each shard Writer holds.
const WriterBuffer = 1 << 20

// NewWriter writes the header frame for kind and returns a Writer.
func NewWriter(w io.Writer, kind Kind) (*Writer, error) {
	sw := &Writer{w: bufio.NewWriterSize(w, WriterBuffer), kind: kind}
	sw.enc = msgpack.NewEncoder(&sw.buf)
	sw.enc.UseCompactInts(true)
	if err := sw.frame(Header{Format: Format, Version: Version, Kind: kind}); err != nil {
		return nil, fmt.Errorf("records: write header: %w", err)
	}
	return sw, nil
}

// Write appends one record; its type must match the writer's kind.
func (w *Writer) Write(v any) error {
	if k := kindOf(v); k != w.kind {
		return fmt.Errorf("records: cannot write %T to a %s shard", v, w.kind)
	}
	if err := w.frame(v); err != nil {
		return fmt.Errorf("records: write record %d: %w", w.n, err)
	}
	w.n++
	return nil
}

func (w *Writer) frame(v any) error {
	w.buf.Reset()
	if err := w.enc.Encode(v); err != nil {
		return err
	}
	if w.buf.Len() > MaxFrame {
		return fmt.Errorf("payload of %d bytes exceeds the %d-byte frame limit", w.buf.Len(), MaxFrame)
	}
	binary.LittleEndian.PutUint32(w.hdr[0:4], uint32(w.buf.Len()))
	binary.LittleEndian.PutUint32(w.hdr[4:8], crc32.Checksum(w.buf.Bytes(), castagnoli))
	if _, err := w.w.Write(w.hdr[:]); err != nil {
		return err
	}
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		return err
	}
	w.bytes += int64(8 + w.buf.Len())
	return nil
}

// Flush writes buffered frames to the underlying writer. Call it before
// closing that writer.
func (w *Writer) Flush() error { return w.w.Flush() }

// Count is the number of records written, header excluded.
func (w *Writer) Count() int { return w.n }

// Bytes is the number of bytes written, header included.
func (w *Writer) Bytes() int64 { return w.bytes }

// Reader reads framed records from an io.Reader.
type Reader struct {
	r      *bufio.Reader
	name   string
	off    int64
	rec    int
	buf    []byte
	dec    *msgpack.Decoder
	br     bytes.Reader
	Header Header
}

// NewReader reads and checks the header frame. name is used in errors.
func NewReader(r io.Reader, name string) (*Reader, error) {
	sr := &Reader{r: bufio.NewReaderSize(r, 1<<20), name: name, rec: -1}
	sr.dec = msgpack.NewDecoder(&sr.br)
	payload, err := sr.frame()
	if err == io.EOF {
		return nil, &CorruptError{File: name, Offset: 0, Record: -1, Reason: "empty file: no header frame"}
	}
	if err != nil {
		return nil, err
	}
	if err := sr.decode(payload, &sr.Header); err != nil {
		return nil, err
	}
	if sr.Header.Format != Format || sr.Header.Version != Version {
		return nil, &CorruptError{File: name, Offset: 0, Record: -1,
			Reason: fmt.Sprintf("header says format %q version %d, want %q version %d", sr.Header.Format, sr.Header.Version, Format, Version)}
	}
	switch sr.Header.Kind {
	case KindImage, KindTokens, KindFeatures:
	default:
		return nil, &CorruptError{File: name, Offset: 0, Record: -1, Reason: fmt.Sprintf("unknown record kind %q", sr.Header.Kind)}
	}
	sr.rec = 0
	return sr, nil
}

// Kind is the kind of the shard's records.
func (r *Reader) Kind() Kind { return r.Header.Kind }

// Offset is the byte offset of the next frame.
func (r *Reader) Offset() int64 { return r.off }

// Next decodes the next record into v, a pointer to the shard kind's type.
// It returns io.EOF after the last record and a *CorruptError for damage.
func (r *Reader) Next(v any) error {
	if k := kindOf(v); k != r.Header.Kind {
		return fmt.Errorf("records: %s holds %s records, cannot read them into %T", r.name, r.Header.Kind, v)
	}
	start := r.off
	payload, err := r.frame()
	if err != nil {
		return err
	}
	return r.decodeRecord(start, payload, v)
}

// decodeRecord decodes the payload of the frame at offset start into v,
// checks it and counts it.
func (r *Reader) decodeRecord(start int64, payload []byte, v any) error {
	reset(v)
	if err := r.decode(payload, v); err != nil {
		return err
	}
	if err := validate(v); err != nil {
		return &CorruptError{File: r.name, Offset: start, Record: r.rec, Reason: err.Error()}
	}
	r.rec++
	return nil
}

// NextWhere reads the next record and decodes it into v, as Next does,
// only when keep accepts its key; otherwise it decodes the key alone (no
// pixels, tokens or features: a scan that keeps a few records of a big
// shard makes no garbage of the rest) and reports false. The frame's CRC
// is checked either way. keep nil keeps every record.
func (r *Reader) NextWhere(v any, keep func(key string) bool) (bool, error) {
	if keep == nil {
		return true, r.Next(v)
	}
	if k := kindOf(v); k != r.Header.Kind {
		return false, fmt.Errorf("records: %s holds %s records, cannot read them into %T", r.name, r.Header.Kind, v)
	}
	start := r.off
	payload, err := r.frame()
	if err != nil {
		return false, err
	}
	key, keyErr := r.key(payload)
	if keyErr == nil && !keep(key) {
		r.rec++
		return false, nil
	}
	// Kept, or not the field map igpt writes: decode it whole, as Next
	// does, and filter on the decoded key.
	if err := r.decodeRecord(start, payload, v); err != nil {
		return false, err
	}
	return keyErr == nil || keep(keyOf(v)), nil
}

// keyOf is the key of a decoded record.
func keyOf(v any) string {
	switch x := v.(type) {
	case *Image:
		return x.Key
	case *Tokens:
		return x.Key
	case *Features:
		return x.Key
	}
	return ""
}

// key decodes the "key" field of a record's payload (a msgpack map of
// field names, as Writer writes it), skipping the other fields without
// keeping them (the decoder reuses one buffer). The last "key" wins, as in
// a whole decode; no key is "". An error means the payload is not such a
// map, and the caller decodes it whole.
func (r *Reader) key(payload []byte) (string, error) {
	r.br.Reset(payload)
	r.dec.Reset(&r.br)
	n, err := r.dec.DecodeMapLen()
	if err != nil {
		return "", err
	}
	if n < 0 {
		return "", errors.New("nil map")
	}
	key := ""
	for i := 0; i < n; i++ {
		name, err := r.dec.DecodeString()
		if err != nil {
			return "", err
		}
		if name == "key" {
			if key, err = r.dec.DecodeString(); err != nil {
				return "", err
			}
		} else if err := r.dec.Skip(); err != nil {
			return "", err
		}
	}
	if r.br.Len() != 0 {
		return "", errors.New("trailing bytes")
	}
	return key, nil
}

// Skip reads past the next record without decoding it, still checking its CRC.
func (r *Reader) Skip() error {
	if _, err := r.frame(); err != nil {
		return err
	}
	r.rec++
	return nil
}

func (r *Reader) corrupt(off int64, format string, args ...any) error {
	return &CorruptError{File: r.name, Offset: off, Record: r.rec, Reason: fmt.Sprintf(format, args...)}
}

// frame reads one frame and returns its payload (valid until the next call).
func (r *Reader) frame() ([]byte, error) {
	start := r.off
	var hdr [8]byte
	n, err := io.ReadFull(r.r, hdr[:])
	r.off += int64(n)
	if err == io.EOF {
		return nil, io.EOF
	}
	if err == io.ErrUnexpectedEOF {
		return nil, r.corrupt(start, "short frame header: %d of 8 bytes (file truncated)", n)
	}
	if err != nil {
		return nil, fmt.Errorf("records: read %s at offset %d: %w", r.name, start, err)
	}
	size := binary.LittleEndian.Uint32(hdr[0:4])
	sum := binary.LittleEndian.Uint32(hdr[4:8])
	if size > MaxFrame {
		return nil, r.corrupt(start, "frame length %d exceeds the %d-byte limit", size, MaxFrame)
	}
	if err := r.readPayload(int(size)); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, r.corrupt(start, "short frame: want %d payload bytes, file ends after %d (file truncated)", size, r.off-start-8)
		}
		return nil, fmt.Errorf("records: read %s at offset %d: %w", r.name, start, err)
	}
	if got := crc32.Checksum(r.buf, castagnoli); got != sum {
		return nil, r.corrupt(start, "CRC-32C mismatch: frame says %08x, payload hashes to %08x", sum, got)
	}
	return r.buf, nil
}

// readPayload fills r.buf with size bytes, growing it as data actually
// arrives so a corrupt length cannot force a large allocation up front.
func (r *Reader) readPayload(size int) error {
	r.buf = r.buf[:0]
	for len(r.buf) < size {
		chunk := min(size-len(r.buf), 1<<20)
		if cap(r.buf)-len(r.buf) < chunk {
			nb := make([]byte, len(r.buf), max(2*cap(r.buf), len(r.buf)+chunk))
			copy(nb, r.buf)
			r.buf = nb
		}
		n, err := io.ReadFull(r.r, r.buf[len(r.buf):len(r.buf)+chunk])
		r.buf = r.buf[:len(r.buf)+n]
		r.off += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *Reader) decode(payload []byte, v any) error {
	start := r.off - int64(len(payload)) - 8
	r.br.Reset(payload)
	r.dec.Reset(&r.br)
	if err := r.dec.Decode(v); err != nil {
		return r.corrupt(start, "bad msgpack payload: %v", err)
	}
	if r.br.Len() != 0 {
		return r.corrupt(start, "%d trailing bytes after the msgpack value", r.br.Len())
	}
	return nil
}

func kindOf(v any) Kind {
	switch v.(type) {
	case Image, *Image:
		return KindImage
	case Tokens, *Tokens:
		return KindTokens
	case Features, *Features:
		return KindFeatures
	}
	return ""
}

// reset zeroes v so that decoding never writes into slices a caller kept
// from the previous record.
func reset(v any) {
	switch x := v.(type) {
	case *Image:
		*x = Image{}
	case *Tokens:
		*x = Tokens{}
	case *Features:
		*x = Features{}
	}
}

// product reports whether the dimensions are non-negative and multiply to
// n exactly, without wrapping around (h = 2^56+1, w = 256 is not 256).
func product(n int, dims ...int) bool {
	p := uint64(1)
	for _, d := range dims {
		if d < 0 {
			return false
		}
		hi, lo := bits.Mul64(p, uint64(d))
		if hi != 0 {
			return false
		}
		p = lo
	}
	return p == uint64(n)
}

// validate checks a decoded record's internal consistency.
func validate(v any) error {
	switch x := v.(type) {
	case *Image:
		if !product(len(x.Pix), x.H, x.W, x.C) {
			return fmt.Errorf("image %q: %d pixel bytes do not match h×w×c = %d×%d×%d", x.Key, len(x.Pix), x.H, x.W, x.C)
		}
	case *Tokens:
		if !product(len(x.Tok), x.H, x.W) {
			return fmt.Errorf("tokens %q: %d tokens do not match h×w = %d×%d", x.Key, len(x.Tok), x.H, x.W)
		}
		if x.Vocab < 1 || x.Vocab > 1<<16 {
			return fmt.Errorf("tokens %q: vocab %d is outside 1..65536 (tokens are uint16)", x.Key, x.Vocab)
		}
		for i, t := range x.Tok {
			if int(t) >= x.Vocab {
				return fmt.Errorf("tokens %q: token %d at position %d is outside the vocabulary of %d", x.Key, t, i, x.Vocab)
			}
		}
	}
	return nil
}

// Verify reads every frame of a shard, checking CRCs and decoding each
// record, and returns the header and record count.
func Verify(r io.Reader, name string) (Header, int, error) {
	sr, err := NewReader(r, name)
	if err != nil {
		return Header{}, 0, err
	}
	var next func() error
	switch sr.Header.Kind {
	case KindImage:
		var x Image
		next = func() error { return sr.Next(&x) }
	case KindTokens:
		var x Tokens
		next = func() error { return sr.Next(&x) }
	default:
		var x Features
		next = func() error { return sr.Next(&x) }
	}
	n := 0
	for {
		err := next()
		if err == io.EOF {
			return sr.Header, n, nil
		}
		if err != nil {
			return sr.Header, n, err
		}
		n++
	}
}

// Record is the union of the record types.
type Record interface{ Image | Tokens | Features }

// Scan reads a whole shard, passing each record to fn in order. fn may
// return io.EOF to stop early without error.
func Scan[T Record](r io.Reader, name string, fn func(T) error) error {
	return ScanWhere(r, name, nil, fn)
}

// ScanWhere reads a whole shard, passing to fn, in order, each record
// whose key keep accepts (keep nil: every record); the others are read
// and checked but not decoded beyond their key (Reader.NextWhere). fn may
// return io.EOF to stop early without error.
func ScanWhere[T Record](r io.Reader, name string, keep func(key string) bool, fn func(T) error) error {
	sr, err := NewReader(r, name)
	if err != nil {
		return err
	}
	for {
		var x T
		ok, err := sr.NextWhere(&x, keep)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := fn(x); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}
