package records

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func writeShard(t testing.TB, kind Kind, recs ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, kind)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != w.Bytes() {
		t.Fatalf("Bytes() = %d, wrote %d", w.Bytes(), buf.Len())
	}
	return buf.Bytes()
}

func sampleImages(n int) []any {
	var out []any
	for i := 0; i < n; i++ {
		pix := make([]byte, 4*3*3)
		for j := range pix {
			pix[j] = byte(i*7 + j)
		}
		out = append(out, Image{Key: "k" + string(rune('a'+i)), Label: i - 1, H: 4, W: 3, C: 3, Pix: pix})
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		recs []any
		read func(*Reader) (any, error)
	}{
		{"images", KindImage, sampleImages(5), func(r *Reader) (any, error) { var x Image; err := r.Next(&x); return x, err }},
		{"tokens", KindTokens, []any{
			Tokens{Key: "a", Label: 3, H: 2, W: 2, Vocab: 512, Tok: []uint16{0, 511, 127, 128}},
			Tokens{Key: "b", Label: -1, H: 1, W: 3, Vocab: 9, Tok: []uint16{8, 0, 1}},
		}, func(r *Reader) (any, error) { var x Tokens; err := r.Next(&x); return x, err }},
		{"features", KindFeatures, []any{
			Features{Key: "a", Label: 1, Layer: 4, Vec: []float32{1.5, -2, 0}},
		}, func(r *Reader) (any, error) { var x Features; err := r.Next(&x); return x, err }},
		{"empty", KindTokens, nil, func(r *Reader) (any, error) { var x Tokens; err := r.Next(&x); return x, err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := writeShard(t, tc.kind, tc.recs...)
			r, err := NewReader(bytes.NewReader(data), "s.msgpack")
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind() != tc.kind {
				t.Fatalf("kind %q, want %q", r.Kind(), tc.kind)
			}
			for i, want := range tc.recs {
				got, err := tc.read(r)
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if !equalRec(got, want) {
					t.Fatalf("record %d: got %+v, want %+v", i, got, want)
				}
			}
			if _, err := tc.read(r); err != io.EOF {
				t.Fatalf("after last record: %v, want io.EOF", err)
			}
			h, n, err := Verify(bytes.NewReader(data), "s")
			if err != nil || n != len(tc.recs) || h.Kind != tc.kind {
				t.Fatalf("Verify = %v, %d, %v", h, n, err)
			}
		})
	}
}

func equalRec(a, b any) bool {
	switch x := a.(type) {
	case Image:
		y := b.(Image)
		return x.Key == y.Key && x.Label == y.Label && x.H == y.H && x.W == y.W && x.C == y.C && bytes.Equal(x.Pix, y.Pix)
	case Tokens:
		y := b.(Tokens)
		if x.Key != y.Key || x.Label != y.Label || x.H != y.H || x.W != y.W || x.Vocab != y.Vocab || len(x.Tok) != len(y.Tok) {
			return false
		}
		for i := range x.Tok {
			if x.Tok[i] != y.Tok[i] {
				return false
			}
		}
		return true
	case Features:
		y := b.(Features)
		if x.Key != y.Key || x.Label != y.Label || x.Layer != y.Layer || len(x.Vec) != len(y.Vec) {
			return false
		}
		for i := range x.Vec {
			if x.Vec[i] != y.Vec[i] {
				return false
			}
		}
		return true
	}
	return false
}

// TestReaderKeepsRecords checks that a record kept by the caller is not
// overwritten when the reader decodes the next one into the same variable.
func TestReaderKeepsRecords(t *testing.T) {
	data := writeShard(t, KindImage, sampleImages(2)...)
	r, err := NewReader(bytes.NewReader(data), "s")
	if err != nil {
		t.Fatal(err)
	}
	var x Image
	if err := r.Next(&x); err != nil {
		t.Fatal(err)
	}
	first := x.Pix
	keep := append([]byte(nil), first...)
	if err := r.Next(&x); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, keep) {
		t.Fatal("second Next overwrote the first record's pixels")
	}
}

// TestReliabilityHeld_ShardEveryByteFlipped flips every byte of a small shard in turn: each must give a
// CorruptError naming the file and an offset at or before the flipped byte,
// never a silent wrong record or a panic.
func TestReliabilityHeld_ShardEveryByteFlipped(t *testing.T) {
	data := writeShard(t, KindImage, sampleImages(3)...)
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		_, _, err := Verify(bytes.NewReader(bad), "train-00000-of-00001.msgpack")
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("flip at %d: error %v, want *CorruptError", i, err)
		}
		if ce.Offset > int64(i) {
			t.Fatalf("flip at %d: reported offset %d is past the damage", i, ce.Offset)
		}
		msg, _, _ := strings.Cut(err.Error(), "\n")
		if !strings.HasPrefix(msg, "records: train-00000-of-00001.msgpack: ") || !strings.Contains(msg, "byte offset") {
			t.Fatalf("flip at %d: message %q does not name file and offset", i, msg)
		}
	}
}

func TestReliabilityHeld_ShardTruncated(t *testing.T) {
	data := writeShard(t, KindImage, sampleImages(3)...)
	for _, n := range []int{0, 3, 8, 20, len(data) - 1} {
		_, _, err := Verify(bytes.NewReader(data[:n]), "x.msgpack")
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("truncated to %d: %v, want *CorruptError", n, err)
		}
		if first, _, _ := strings.Cut(err.Error(), "\n"); !strings.HasPrefix(first, "records: x.msgpack: ") || !strings.Contains(first, "byte offset") {
			t.Fatalf("truncated to %d: first line %q does not name the file and offset", n, first)
		}
	}
}

func TestWrongKind(t *testing.T) {
	data := writeShard(t, KindImage, sampleImages(1)...)
	r, err := NewReader(bytes.NewReader(data), "x")
	if err != nil {
		t.Fatal(err)
	}
	var tok Tokens
	if err := r.Next(&tok); err == nil || !strings.Contains(err.Error(), "Image") {
		t.Fatalf("reading Tokens from an Image shard: %v", err)
	}
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, KindTokens)
	if err := w.Write(Image{}); err == nil {
		t.Fatal("writing an Image to a Tokens shard succeeded")
	}
}

func TestInvalidRecord(t *testing.T) {
	data := writeShard(t, KindTokens, Tokens{Key: "a", H: 1, W: 2, Vocab: 4, Tok: []uint16{1, 9}})
	_, _, err := Verify(bytes.NewReader(data), "x")
	if err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
		t.Fatalf("token out of vocabulary: %v", err)
	}
}

func TestShardName(t *testing.T) {
	if got := ShardName("train", 3, 16); got != "train-00003-of-00016.msgpack" {
		t.Fatal(got)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(writeShard(f, KindImage, sampleImages(2)...))
	f.Add(writeShard(f, KindTokens, Tokens{Key: "a", H: 1, W: 1, Vocab: 2, Tok: []uint16{1}}))
	f.Add(writeShard(f, KindFeatures, Features{Key: "a", Vec: []float32{1}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, n, err := Verify(bytes.NewReader(data), "fuzz")
		if err != nil && n < 0 {
			t.Fatal("negative count")
		}
	})
}
