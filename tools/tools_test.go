package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/stages"
)

// writeStage writes a finished stage folder ROOT/stage/key: its files and
// a manifest listing them (Tokens and Image shards under split "test").
func writeStage(t *testing.T, root, stage, key string, files map[string][]byte, meta map[string]any, inputs ...stages.Input) string {
	t.Helper()
	ctx := context.Background()
	dir := storage.Join(root, stage, key)
	m := stages.Manifest{Stage: stage, Key: key, Meta: meta, Inputs: inputs}
	for name, b := range files {
		if err := storage.WriteFile(ctx, storage.Join(dir, name), b); err != nil {
			t.Fatal(err)
		}
		split := ""
		if strings.HasSuffix(name, ".msgpack") && stage != "palette" {
			split = "test"
		}
		m.Files = append(m.Files, stages.FileInfo{Name: name, Split: split})
	}
	b, _ := json.Marshal(m)
	if err := storage.WriteFile(ctx, storage.Join(dir, stages.ManifestName), b); err != nil {
		t.Fatal(err)
	}
	return dir
}

func shard[T records.Record](t *testing.T, kind records.Kind, recs ...T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := records.NewWriter(&buf, kind)
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
	return buf.Bytes()
}

// fixture writes a finished run under root: a 16-colour palette of reds,
// a download output holding imgs, a quantize output holding toks, and a
// train output with a tiny model for grids of toks[0]'s size.
func fixture(t *testing.T, root string, imgs []records.Image, toks ...records.Tokens) (qdir, rundir string) {
	t.Helper()
	pal := &records.Palette{K: 16}
	for i := 0; i < 16; i++ {
		pal.Centres = append(pal.Centres, [3]float32{float32(i * 16), 0, 0})
	}
	pb, err := records.EncodePalette(pal)
	if err != nil {
		t.Fatal(err)
	}
	writeStage(t, root, "palette", "aaaaaaaaaaaa", map[string][]byte{stages.PaletteFile: pb}, nil)
	writeStage(t, root, "download", "bbbbbbbbbbbb", map[string][]byte{"test-00000.msgpack": shard(t, records.KindImage, imgs...)}, nil)
	qdir = writeStage(t, root, "quantize", "cccccccccccc", map[string][]byte{"test-00000-of-00001.msgpack": shard(t, records.KindTokens, toks...)},
		map[string]any{"vocab": 16}, stages.Input{Stage: "download", Key: "bbbbbbbbbbbb"}, stages.Input{Stage: "palette", Key: "aaaaaaaaaaaa"})
	p, err := model.NewParams(model.Config{Layers: 1, D: 8, Heads: 1, Seq: toks[0].H * toks[0].W, Vocab: 16})
	if err != nil {
		t.Fatal(err)
	}
	p.Init(1)
	var wb bytes.Buffer
	if err := model.SaveCheckpoint(&wb, p, nil); err != nil {
		t.Fatal(err)
	}
	ck := "checkpoints/step-00000001"
	rundir = writeStage(t, root, "train", "dddddddddddd", map[string][]byte{ck + "/" + stages.WeightsFile: wb.Bytes()},
		map[string]any{"checkpoint": ck, "model": p.Config, "objective": "ar"}, stages.Input{Stage: "quantize", Key: "cccccccccccc"})
	return qdir, rundir
}

func tokRec(key string, h, w int, fill uint16) records.Tokens {
	tok := make([]uint16, h*w)
	for i := range tok {
		tok[i] = fill
	}
	return records.Tokens{Key: key, H: h, W: w, Vocab: 16, Tok: tok}
}

// TestShowTokensResizedOriginal: with quantize.resize the originals are
// bigger than the token grid; show draws them resized to it (they were
// blank white cells), local and on gs://.
func TestShowTokensResizedOriginal(t *testing.T) {
	testutil.FakeGCS(t, "bkt")
	orig := records.Image{Key: "a", H: 4, W: 4, C: 1, Pix: bytes.Repeat([]byte{60}, 16)}
	for _, root := range []string{t.TempDir(), "gs://bkt/run"} {
		qdir, _ := fixture(t, root, []records.Image{orig}, tokRec("a", 2, 2, 3))
		b, err := ShowTokens(context.Background(), qdir, 8, 1)
		if err != nil {
			t.Fatalf("%s: %v", root, err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		// The pair's left half is the original (grey 60), the right the
		// tokens (palette colour 3: red 48).
		for _, c := range []struct {
			x, y    int
			r, g, b uint32
		}{{0, 0, 60, 60, 60}, {1, 1, 60, 60, 60}, {2, 0, 48, 0, 0}, {3, 1, 48, 0, 0}} {
			r, g, bb, _ := img.At(c.x, c.y).RGBA()
			if r>>8 != c.r || g>>8 != c.g || bb>>8 != c.b {
				t.Errorf("%s: pixel (%d, %d) = %d,%d,%d, want %d,%d,%d", root, c.x, c.y, r>>8, g>>8, bb>>8, c.r, c.g, c.b)
			}
		}
	}
}

// TestShowTokensErrors: show refuses a split whose records differ in
// size, or hold a token past the palette, naming the record and the shard;
// a scale out of range names --scale; a trailing slash is the folder.
func TestShowTokensErrors(t *testing.T) {
	ctx := context.Background()
	past := tokRec("past", 2, 2, 600)
	past.Vocab = 65535 // valid alone, but past the 16-colour palette
	for _, tc := range []struct {
		name  string
		toks  []records.Tokens
		path  string
		scale int
		want  string
	}{
		{"mixed sizes", []records.Tokens{tokRec("small", 2, 2, 1), tokRec("big", 3, 3, 1)}, "", 2, `("big") is 3×3`},
		{"token past palette", []records.Tokens{tokRec("ok", 2, 2, 1), past}, "", 2, `("past"): token 600`},
		{"scale too big", []records.Tokens{tokRec("a", 2, 2, 1)}, "", 1_000_000, "--scale"},
		{"scale 0", []records.Tokens{tokRec("a", 2, 2, 1)}, "", 0, "--scale"},
		{"trailing slash", []records.Tokens{tokRec("a", 2, 2, 1)}, "//", 2, ""},
		{"shard path", []records.Tokens{tokRec("a", 2, 2, 1)}, "/test-00000-of-00001.msgpack", 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			qdir, _ := fixture(t, t.TempDir(), nil, tc.toks...)
			_, err := ShowTokens(ctx, qdir+tc.path, 8, tc.scale)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("show tokens %s: %v", qdir+tc.path, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("show tokens: %v, want it to name %s", err, tc.want)
			}
		})
	}
}

// TestInspect prints a shard's kind and record count, and names the shard
// and byte offset of a damaged one.
func TestInspect(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "train-00000.msgpack")
	imgs := []records.Image{{Key: "a", H: 2, W: 2, C: 1, Pix: make([]byte, 4)}, {Key: "b", H: 2, W: 2, C: 1, Pix: make([]byte, 4)}}
	data := shard(t, records.KindImage, imgs...)
	os.WriteFile(path, data, 0o644)
	var out bytes.Buffer
	if err := Inspect(context.Background(), path, 1, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "records: 2") || !strings.Contains(s, "kind:    Image") || !strings.Contains(s, "[0]") || strings.Contains(s, "[1]") {
		t.Fatalf("inspect:\n%s", s)
	}
	data[len(data)-3] ^= 1
	os.WriteFile(path, data, 0o644)
	err := Inspect(context.Background(), path, 1, io.Discard)
	var ce *records.CorruptError
	first, _, _ := strings.Cut(fmt.Sprint(err), "\n")
	if !errors.As(err, &ce) || !strings.Contains(first, path) || !strings.Contains(first, "byte offset") {
		t.Fatalf("inspect of a damaged shard: the first line does not name the shard and offset: %v", err)
	}
}

// TestHFRoundTrip exports a train folder's weights as Hugging Face files
// and imports them back as a checkpoint: same config, same weights.
func TestHFRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, rundir := fixture(t, t.TempDir(), nil, tokRec("a", 2, 2, 1))
	hf := filepath.Join(t.TempDir(), "hf")
	if err := ExportHF(ctx, rundir+"/", hf); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(t.TempDir(), "model.safetensors")
	cfg, err := ImportHF(ctx, hf, ck)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := stages.ReadManifest(ctx, rundir)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := stages.LoadTrained(ctx, tm)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(ck)
	got, _, err := model.LoadCheckpoint(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if cfg != want.Config || got.Config != want.Config || fmt.Sprint(got.Data) != fmt.Sprint(want.Data) {
		t.Fatalf("round trip: config %v, want %v; weights equal: %v", cfg, want.Config, fmt.Sprint(got.Data) == fmt.Sprint(want.Data))
	}
	if err := ExportHF(ctx, filepath.Dir(rundir), hf); err == nil {
		t.Fatal("exported from a folder that is not a train stage")
	}
}
