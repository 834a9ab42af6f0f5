package model

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/igpt/igpt/internal/kernels"
	"gorgonia.org/tensor"
)

// A minimal safetensors reader and writer
// (https://huggingface.co/docs/safetensors, and the reader and writer of
// ../shared/bench/igpt_reference.py): an unsigned 64-bit little-endian
// header length n, n bytes of JSON
//
//	{"__metadata__": {"key": "value", …},
//	 "name": {"dtype": "F32", "shape": [d0, d1], "data_offsets": [begin, end]}, …}
//
// padded with spaces to a multiple of 8 bytes, then the tensors' raw
// little-endian bytes; offsets are relative to the end of the header and the
// tensors tile the data exactly (no holes, no overlap).

// STTensor is one tensor of a safetensors file.
type STTensor struct {
	Name  string // in the header (errors name it)
	DType string // "F32", "F64", "F16", "BF16", "I64", …
	Shape []int
	Data  []byte // raw little-endian bytes (a view into the file)
}

// SafeTensors is a parsed safetensors file.
type SafeTensors struct {
	Metadata map[string]string
	Tensors  map[string]STTensor
	Names    []string // in data order
}

var stSizes = map[string]int{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1,
	"U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}

// maxHeader bounds the JSON header (the safetensors library uses 100 MB).
const maxHeader = 100 << 20

// ParseSafetensors parses a whole safetensors file held in memory. Tensor
// data are views into buf.
func ParseSafetensors(buf []byte) (*SafeTensors, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("safetensors: %d bytes, too short for a header", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	if n > maxHeader || n > uint64(len(buf)-8) {
		return nil, fmt.Errorf("safetensors: header length %d runs past the end of the file (%d bytes)", n, len(buf))
	}
	hdr := bytes.TrimRight(buf[8:8+n], " ")
	if len(hdr) == 0 || hdr[0] != '{' {
		return nil, errors.New("safetensors: header is not a JSON object")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("safetensors: header: %w", err)
	}
	data := buf[8+n:]
	st := &SafeTensors{Metadata: map[string]string{}, Tensors: make(map[string]STTensor, len(raw))}
	entries := make([]stEntry, 0, len(raw))
	for name, msg := range raw {
		if name == "__metadata__" {
			if string(msg) != "null" {
				if err := json.Unmarshal(msg, &st.Metadata); err != nil {
					return nil, fmt.Errorf("safetensors: __metadata__ must map strings to strings: %w", err)
				}
			}
			continue
		}
		t, b, e, err := parseEntry(name, msg, data)
		if err != nil {
			return nil, err
		}
		st.Tensors[name] = t
		entries = append(entries, stEntry{name, b, e})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].begin != entries[j].begin {
			return entries[i].begin < entries[j].begin
		}
		return entries[i].end < entries[j].end
	})
	var off uint64
	for _, e := range entries {
		if e.begin != off {
			return nil, fmt.Errorf("safetensors: tensor %q starts at %d, want %d (data must be contiguous, no overlap)", e.name, e.begin, off)
		}
		off = e.end
		st.Names = append(st.Names, e.name)
	}
	if off != uint64(len(data)) {
		return nil, fmt.Errorf("safetensors: tensors cover %d of %d data bytes", off, len(data))
	}
	return st, nil
}

// stEntry is where a tensor's bytes lie in the data section.
type stEntry struct {
	name       string
	begin, end uint64
}

// parseEntry checks one tensor's header entry against the data section
// and returns the tensor and its byte range.
func parseEntry(name string, msg json.RawMessage, data []byte) (STTensor, uint64, uint64, error) {
	var info struct {
		DType   *string  `json:"dtype"`
		Shape   []int64  `json:"shape"`
		Offsets []uint64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(msg, &info); err != nil {
		return STTensor{}, 0, 0, fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	if info.DType == nil || info.Shape == nil || len(info.Offsets) != 2 {
		return STTensor{}, 0, 0, fmt.Errorf("safetensors: tensor %q: want dtype, shape and two data_offsets", name)
	}
	size, ok := stSizes[*info.DType]
	if !ok {
		return STTensor{}, 0, 0, fmt.Errorf("safetensors: tensor %q: unsupported dtype %q", name, *info.DType)
	}
	count := uint64(1)
	shape := make([]int, len(info.Shape))
	for i, s := range info.Shape {
		if s < 0 || (s > 0 && count > uint64(len(data))/uint64(s)) {
			return STTensor{}, 0, 0, fmt.Errorf("safetensors: tensor %q: shape %v does not fit the file", name, info.Shape)
		}
		count *= uint64(s)
		shape[i] = int(s)
	}
	b, e := info.Offsets[0], info.Offsets[1]
	if b > e || e > uint64(len(data)) || e-b != count*uint64(size) {
		return STTensor{}, 0, 0, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] do not fit shape %v %s in %d data bytes",
			name, b, e, info.Shape, *info.DType, len(data))
	}
	return STTensor{Name: name, DType: *info.DType, Shape: shape, Data: data[b:e:e]}, b, e, nil
}

// ReadSafetensors reads and parses a safetensors file.
func ReadSafetensors(r io.Reader) (*SafeTensors, error) {
	buf, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("safetensors: read: %w", err)
	}
	return ParseSafetensors(buf)
}

// Len is the number of elements.
func (t STTensor) Len() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Float32s converts a floating-point tensor (F32, F64, F16, BF16) to
// float32 into dst (grown if too short) and returns it. A NaN or an
// infinity is an error naming the tensor and the value's index: every
// weights loader (the iGPT checkpoint and optimizer state, the classifier
// head, HF import, the VQ-VAE) decodes through here or Float64s, so
// non-finite weights are refused at load, once, for all of them.
func (t STTensor) Float32s(dst []float32) ([]float32, error) {
	dst, err := t.float32s(dst)
	if err != nil {
		return nil, err
	}
	for i, v := range dst {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, t.nonFinite(i, float64(v))
		}
	}
	return dst, nil
}

// errNonFinite is what every non-finite weight's error wraps.
var errNonFinite = errors.New("the weights are not finite")

// nonFinite is the error for value i of t, v, a NaN or an infinity.
func (t STTensor) nonFinite(i int, v float64) error {
	return fmt.Errorf("safetensors: tensor %q %v: value %d is %v: %w (a diverged or damaged run); use an earlier checkpoint", t.Name, t.Shape, i, v, errNonFinite)
}

func (t STTensor) float32s(dst []float32) ([]float32, error) {
	n := t.Len()
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	d := t.Data
	switch t.DType {
	case "F32":
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case "F64":
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	case "BF16":
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(d[2*i:])) << 16)
		}
	case "F16":
		for i := range dst {
			dst[i] = half(binary.LittleEndian.Uint16(d[2*i:]))
		}
	default:
		return nil, fmt.Errorf("safetensors: dtype %s is not floating point", t.DType)
	}
	return dst, nil
}

// Float64s converts a floating-point tensor to float64.
func (t STTensor) Float64s() ([]float64, error) {
	if t.DType == "F64" {
		out := make([]float64, t.Len())
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
			if math.IsNaN(out[i]) || math.IsInf(out[i], 0) {
				return nil, t.nonFinite(i, out[i])
			}
		}
		return out, nil
	}
	f, err := t.Float32s(nil)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v)
	}
	return out, nil
}

// Ints converts an integer tensor (I64, I32, I16, I8, U8, BOOL, …) to int64.
func (t STTensor) Ints() ([]int64, error) {
	size, ok := stSizes[t.DType]
	if !ok || t.DType[0] == 'F' || t.DType == "BF16" {
		return nil, fmt.Errorf("safetensors: dtype %s is not an integer type", t.DType)
	}
	out := make([]int64, t.Len())
	d := t.Data
	for i := range out {
		switch t.DType {
		case "I64", "U64":
			out[i] = int64(binary.LittleEndian.Uint64(d[8*i:]))
		case "I32":
			out[i] = int64(int32(binary.LittleEndian.Uint32(d[4*i:])))
		case "U32":
			out[i] = int64(binary.LittleEndian.Uint32(d[4*i:]))
		case "I16":
			out[i] = int64(int16(binary.LittleEndian.Uint16(d[2*i:])))
		case "U16":
			out[i] = int64(binary.LittleEndian.Uint16(d[2*i:]))
		case "I8":
			out[i] = int64(int8(d[i]))
		default: // U8, BOOL
			out[i] = int64(d[i*size])
		}
	}
	return out, nil
}

// half converts an IEEE 754 binary16 value to float32.
func half(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp == 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(frac) / (1 << 24) // subnormal: frac · 2^-24
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

// WTensorOf is the tensor to write for a float32 or float64 gorgonia
// tensor (contiguous), sharing its memory.
func WTensorOf(name string, d *tensor.Dense) (WTensor, error) {
	shape := []int(d.Shape().Clone())
	switch d.Dtype() {
	case tensor.Float64:
		return WTensor{Name: name, Shape: shape, F64: d.Float64s()}, nil
	default:
		f, err := kernels.Float32s(d)
		if err != nil {
			return WTensor{}, fmt.Errorf("safetensors: tensor %s: %w", name, err)
		}
		return WTensor{Name: name, Shape: shape, F32: f}, nil
	}
}

// Into decodes the tensor into dst, a float32 gorgonia tensor of the same
// shape, straight into its memory (a model's weights: no other copy).
func (t STTensor) Into(dst *tensor.Dense) error {
	want := []int(dst.Shape())
	if !slices.Equal(t.Shape, want) {
		return fmt.Errorf("safetensors: tensor is %s %v, want %v", t.DType, t.Shape, want)
	}
	d, err := kernels.Float32s(dst)
	if err != nil {
		return err
	}
	_, err = t.Float32s(d)
	return err
}

// WTensor is a tensor to write: exactly one of F32 and F64 is set.
type WTensor struct {
	Name  string
	Shape []int
	F32   []float32
	F64   []float64
}

func (t WTensor) bytes() int {
	if t.F64 != nil {
		return 8 * len(t.F64)
	}
	return 4 * len(t.F32)
}

// WriteSafetensors writes tensors (in the given order) and metadata (may be
// nil) as a safetensors file.
func WriteSafetensors(w io.Writer, tensors []WTensor, metadata map[string]string) error {
	h, err := safetensorsHeader(tensors, metadata)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var n8 [8]byte
	binary.LittleEndian.PutUint64(n8[:], uint64(h.Len()))
	bw.Write(n8[:])
	bw.Write(h.Bytes())
	var b [8]byte
	for _, t := range tensors {
		if t.F64 != nil {
			for _, v := range t.F64 {
				binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
				bw.Write(b[:8])
			}
			continue
		}
		for _, v := range t.F32 {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			bw.Write(b[:4])
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

// safetensorsHeader is the JSON header of tensors and metadata (keys
// sorted), padded with spaces to a multiple of 8 bytes.
func safetensorsHeader(tensors []WTensor, metadata map[string]string) (*bytes.Buffer, error) {
	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			h.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		sep()
		h.WriteString(`"__metadata__":{`)
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				h.WriteByte(',')
			}
			writeJSONString(&h, k)
			h.WriteByte(':')
			writeJSONString(&h, metadata[k])
		}
		h.WriteByte('}')
	}
	seen := make(map[string]bool, len(tensors))
	var off int64
	for _, t := range tensors {
		if t.Name == "__metadata__" || seen[t.Name] {
			return nil, fmt.Errorf("safetensors: write: bad or duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, s := range t.Shape {
			n *= s
		}
		dtype, have := "F32", len(t.F32)
		if t.F64 != nil {
			dtype, have = "F64", len(t.F64)
		}
		if n != have {
			return nil, fmt.Errorf("safetensors: write %s: shape %v has %d elements, data %d", t.Name, t.Shape, n, have)
		}
		sep()
		writeJSONString(&h, t.Name)
		h.WriteString(`:{"dtype":"` + dtype + `","shape":[`)
		for i, s := range t.Shape {
			if i > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(s))
		}
		end := off + int64(t.bytes())
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	return &h, nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}
