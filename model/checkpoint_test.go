package model

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestCheckpointRoundTrip(t *testing.T) {
	cfg := Config{Layers: 2, D: 16, Heads: 4, Seq: 8, Vocab: 10}
	p, _ := NewParams(cfg)
	p.Init(3)
	// Bit-exact extremes; a NaN or an infinity is refused at load
	// (TestReliability29_11_NonFiniteWeights).
	p.WTE[5] = math.SmallestNonzeroFloat32
	p.WPE[3] = -math.MaxFloat32
	p.LMHead[0] = -0.0
	var buf bytes.Buffer
	if err := SaveCheckpoint(&buf, p, map[string]string{"step": "12", MetaHeads: "99"}); err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(buf.Bytes()); n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	q, meta, err := LoadCheckpoint(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if q.Config != cfg || !bitsEqual(p.Data, q.Data) {
		t.Fatalf("round trip differs: %v vs %v", q.Config, cfg)
	}
	if meta["step"] != "12" || meta[MetaHeads] != "4" || meta["format"] != "pt" {
		t.Errorf("metadata %v", meta)
	}
	// the file is deterministic
	var again bytes.Buffer
	SaveCheckpoint(&again, q, map[string]string{"step": "12"})
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("re-saved checkpoint differs")
	}
}

func TestLoadCheckpointErrors(t *testing.T) {
	cfg := Config{Layers: 2, D: 8, Heads: 2, Seq: 4, Vocab: 5}
	p, _ := NewParams(cfg)
	ts := paramTensors(p, "")
	write := func(ts []WTensor, meta map[string]string) []byte {
		var b bytes.Buffer
		if err := WriteSafetensors(&b, ts, meta); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	meta := configMeta(cfg, nil)
	noHeads := configMeta(cfg, nil)
	delete(noHeads, MetaHeads)
	badMeta := configMeta(cfg, nil)
	badMeta[MetaSeq] = "5"
	extra := append(append([]WTensor{}, ts...), WTensor{Name: "x", Shape: []int{1}, F32: []float32{0}})
	badShape := append([]WTensor{}, ts...)
	badShape[2] = WTensor{Name: ts[2].Name, Shape: []int{4, 2}, F32: ts[2].F32}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"missing", write(ts[:len(ts)-1], meta), "missing 1 tensors"},
		{"missing in the middle", write(append(append([]WTensor{}, ts[:5]...), ts[6:]...), meta), "transformer.h.0.ln_2.weight"},
		{"no n_head", write(ts, noHeads), "n_head"},
		{"metadata disagrees", write(ts, badMeta), "n_positions"},
		{"extra tensor", write(extra, meta), "unexpected tensors"},
		{"bad shape", write(badShape, meta), "shape"},
		{"garbage", []byte("hello world"), "safetensors"},
	} {
		_, _, err := LoadCheckpoint(bytes.NewReader(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
}

func TestOptimizerStateRoundTrip(t *testing.T) {
	cfg := Config{Layers: 1, D: 8, Heads: 2, Seq: 4, Vocab: 5}
	o, _ := NewOptimizer(cfg)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range o.data {
		o.data[i] = float32(rng.NormFloat64())
	}
	o.Step = 17
	var buf bytes.Buffer
	if err := o.SaveState(&buf); err != nil {
		t.Fatal(err)
	}
	o2, _ := NewOptimizer(cfg)
	if err := o2.LoadState(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if o2.Step != 17 || !bitsEqual(o.data, o2.data) {
		t.Error("optimizer state round trip differs")
	}
	st, _ := ParseSafetensors(buf.Bytes())
	if _, ok := st.Tensors["m.transformer.h.0.attn.c_attn.weight"]; !ok {
		t.Errorf("no m.<name> tensor: %v", st.Names)
	}
	o3, _ := NewOptimizer(Config{Layers: 2, D: 8, Heads: 2, Seq: 4, Vocab: 5})
	if err := o3.LoadState(bytes.NewReader(buf.Bytes())); err == nil {
		t.Error("loading a state of another config: no error")
	}
}

// exportHF writes dir/config.json and dir/model.safetensors, as
// `igpt export-hf` does through package tools.
func exportHF(dir string, p *Params) error {
	var cfg, st bytes.Buffer
	if err := WriteHFConfig(&cfg, p.Config); err != nil {
		return err
	}
	if err := WriteHFModel(&st, p); err != nil {
		return err
	}
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), st.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), cfg.Bytes(), 0o644)
}

// importHF reads dir/config.json and dir/model.safetensors with ReadHF.
func importHF(dir string) (*Params, error) {
	cf, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	mf, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return nil, err
	}
	return ReadHF(bytes.NewReader(cf), bytes.NewReader(mf))
}

func TestHFRoundTrip(t *testing.T) {
	cfg := Config{Layers: 3, D: 16, Heads: 4, Seq: 8, Vocab: 12}
	p, _ := NewParams(cfg)
	randomParams(p, 1, 0.1)
	dir := t.TempDir()
	if err := exportHF(dir, p); err != nil {
		t.Fatal(err)
	}
	q, err := importHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	if q.Config != cfg || !bitsEqual(p.Data, q.Data) {
		t.Fatal("HF round trip differs")
	}
	cj, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	for _, want := range []string{`"vocab_size": 13`, `"n_positions": 8`, `"n_inner": null`, `"activation_function": "quick_gelu"`,
		`"layer_norm_epsilon": 0.00001`, `"architectures": [`, `"ImageGPTForCausalImageModeling"`, `"model_type": "imagegpt"`,
		`"tie_word_embeddings": false`, `"scale_attn_weights": true`, `"resid_pdrop": 0`} {
		if !strings.Contains(string(cj), want) {
			t.Errorf("config.json lacks %s:\n%s", want, cj)
		}
	}
	f, _ := os.Open(filepath.Join(dir, "model.safetensors"))
	st, err := ReadSafetensors(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.Metadata["format"] != "pt" {
		t.Error("HF export lacks format=pt metadata")
	}
	for _, name := range []string{"transformer.h.2.attn.c_attn.bias", "transformer.h.0.mlp.c_proj.bias", "lm_head.weight"} {
		if _, ok := st.Tensors[name]; !ok {
			t.Errorf("HF export lacks %s", name)
		}
	}
	if s := st.Tensors["lm_head.weight"].Shape; s[0] != 12 || s[1] != 16 {
		t.Errorf("lm_head shape %v", s)
	}
	checkHFRejects(t, cfg, p, st, cj)
}

// checkHFRejects: ReadHF refuses a non-zero bias, a missing tensor and a
// wrong activation, and ignores the attention-mask buffers.
func checkHFRejects(t *testing.T, cfg Config, p *Params, st *SafeTensors, cj []byte) {
	rewrite := func(edit func([]WTensor) []WTensor) string {
		var ts []WTensor
		for _, name := range st.Names {
			x := st.Tensors[name]
			v, _ := x.Float32s(nil)
			ts = append(ts, WTensor{Name: name, Shape: x.Shape, F32: v})
		}
		ts = edit(ts)
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "config.json"), cj, 0o644)
		var b bytes.Buffer
		if err := WriteSafetensors(&b, ts, nil); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "model.safetensors"), b.Bytes(), 0o644)
		return d
	}
	_, err := importHF(rewrite(func(ts []WTensor) []WTensor {
		for _, x := range ts {
			if x.Name == "transformer.h.1.mlp.c_fc.bias" {
				x.F32[3] = 0.5
			}
		}
		return ts
	}))
	if err == nil || !strings.Contains(err.Error(), "transformer.h.1.mlp.c_fc.bias[3] = 0.5") {
		t.Errorf("non-zero bias: %v", err)
	}
	_, err = importHF(rewrite(func(ts []WTensor) []WTensor {
		var out []WTensor
		for _, x := range ts {
			if x.Name != "transformer.h.2.ln_2.weight" && x.Name != "transformer.wpe.weight" {
				out = append(out, x)
			}
		}
		return out
	}))
	if err == nil || !strings.Contains(err.Error(), "transformer.h.2.ln_2.weight") {
		t.Errorf("missing tensor: %v", err)
	}
	q, err := importHF(rewrite(func(ts []WTensor) []WTensor {
		for i := 0; i < cfg.Layers; i++ {
			ts = append(ts, WTensor{Name: "transformer.h." + string(rune('0'+i)) + ".attn.masked_bias", Shape: []int{}, F32: []float32{-1e4}})
		}
		return ts
	}))
	if err != nil || !bitsEqual(q.Data, p.Data) {
		t.Errorf("mask buffers should be ignored: %v", err)
	}
	for _, bad := range []string{`"activation_function": "gelu"`, `"n_inner": 7`, `"tie_word_embeddings": true`} {
		d := rewrite(func(ts []WTensor) []WTensor { return ts })
		key := bad[:strings.Index(bad, ":")]
		s := string(cj)
		i := strings.Index(s, key)
		j := i + strings.IndexAny(s[i:], ",\n")
		os.WriteFile(filepath.Join(d, "config.json"), []byte(s[:i]+bad+s[j:]), 0o644)
		if _, err := importHF(d); err == nil {
			t.Errorf("config with %s: no error", bad)
		}
	}
}

func TestSafetensorsDTypes(t *testing.T) {
	// F64 and F16/BF16 values convert; hand-made file with a __metadata__.
	hdr := `{"__metadata__":{"a":"b"},"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},` +
		`"h":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[22,24]},` +
		`"i":{"dtype":"I64","shape":[1,1],"data_offsets":[24,32]},"e":{"dtype":"F32","shape":[0,4],"data_offsets":[32,32]}}`
	for len(hdr)%8 != 0 {
		hdr += " "
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
	b.WriteString(hdr)
	binary.Write(&b, binary.LittleEndian, []float64{1.5, -2})
	binary.Write(&b, binary.LittleEndian, []uint16{0x3c00, 0xc000, 0x0001}) // 1, -2, 2^-24
	binary.Write(&b, binary.LittleEndian, uint16(0x4040))                   // BF16 3
	binary.Write(&b, binary.LittleEndian, int64(-7))
	st, err := ParseSafetensors(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	x, _ := st.Tensors["x"].Float32s(nil)
	h, _ := st.Tensors["h"].Float32s(nil)
	bf, _ := st.Tensors["b"].Float32s(nil)
	iv, _ := st.Tensors["i"].Ints()
	if x[0] != 1.5 || x[1] != -2 || h[0] != 1 || h[1] != -2 || h[2] != float32(math.Ldexp(1, -24)) || bf[0] != 3 ||
		iv[0] != -7 || st.Metadata["a"] != "b" || st.Tensors["e"].Len() != 0 {
		t.Errorf("decoded %v %v %v %v %v", x, h, bf, iv, st.Metadata)
	}
	if got := strings.Join(st.Names, ","); got != "x,h,b,i,e" && got != "x,h,b,e,i" {
		t.Errorf("names in data order: %s", got)
	}
}

// TestReliabilityHeld_SafetensorsHeaderAttacks: hostile safetensors headers
// (bad lengths, dtypes, shapes, offsets, overlaps) are refused with an error
// naming the tensor, never a panic (FuzzParseSafetensors widens this).
func TestReliabilityHeld_SafetensorsHeaderAttacks(t *testing.T) {
	mk := func(hdr string, data int) []byte {
		var b bytes.Buffer
		binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
		b.WriteString(hdr)
		b.Write(make([]byte, data))
		return b.Bytes()
	}
	for name, buf := range map[string][]byte{
		"short":        {1, 2, 3},
		"long header":  mk(`{}`, 0)[:9],
		"not object":   mk(`[]`, 0),
		"bad dtype":    mk(`{"x":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}`, 1),
		"size":         mk(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4),
		"past end":     mk(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4),
		"hole":         mk(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		"overlap":      mk(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		"trailing":     mk(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8),
		"neg shape":    mk(`{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4),
		"huge shape":   mk(`{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, 0),
		"bad metadata": mk(`{"__metadata__":{"a":1}}`, 0),
		"no offsets":   mk(`{"x":{"dtype":"F32","shape":[1]}}`, 4),
	} {
		// The first line names the tensor (the key) or what in the header is wrong.
		want := map[string]string{"short": "too short", "long header": "header length 2 runs past",
			"not object": "not a JSON object", "overlap": `tensor "y"`, "trailing": "cover 4 of 8 data bytes",
			"bad metadata": "__metadata__"}[name]
		if want == "" {
			want = `tensor "x"`
		}
		_, err := ParseSafetensors(buf)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if first, _, _ := strings.Cut(err.Error(), "\n"); !strings.HasPrefix(first, "safetensors: ") || !strings.Contains(first, want) {
			t.Errorf("%s: error %v, want a first line naming %s", name, err, want)
		}
	}
}

func FuzzParseSafetensors(f *testing.F) {
	p, _ := NewParams(Config{Layers: 1, D: 4, Heads: 2, Seq: 2, Vocab: 3})
	p.Init(1)
	var b bytes.Buffer
	SaveCheckpoint(&b, p, map[string]string{"k": "v"})
	f.Add(b.Bytes())
	f.Add(b.Bytes()[:100])
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseSafetensors(data)
		if err != nil {
			return
		}
		for _, name := range st.Names {
			x := st.Tensors[name]
			if len(x.Data) != x.Len()*stSizes[x.DType] {
				t.Fatalf("%s: %d bytes for %v %s", name, len(x.Data), x.Shape, x.DType)
			}
			if x.DType[0] == 'F' || x.DType == "BF16" {
				// Every float tensor that parses converts; Float32s then
				// refuses it only for a NaN or an infinity in it.
				if _, err := x.float32s(nil); err != nil {
					t.Fatal(err)
				}
				if _, err := x.Float32s(nil); err != nil && !errors.Is(err, errNonFinite) {
					t.Fatal(err)
				}
			} else if _, err := x.Ints(); err != nil {
				t.Fatal(err)
			}
		}
		// whatever parses also loads or fails cleanly as a checkpoint
		LoadCheckpoint(bytes.NewReader(data))
	})
}
