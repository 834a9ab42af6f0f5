package stages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/pipelines"
	"github.com/igpt/igpt/vqvae"
)

// noiseArchive is folderArchive's layout (train and test, 3 classes of 4)
// with every image a different seeded noise pattern, so that images, and
// their code grids, differ within a class and within a batch.
func noiseArchive(t *testing.T, size int) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	n := 0
	for _, split := range []string{"train", "test"} {
		for _, class := range []string{"cat", "dog", "emu"} {
			for i := 0; i < 4; i++ {
				r := rand.New(rand.NewPCG(uint64(n), 99))
				n++
				img := image.NewRGBA(image.Rect(0, 0, size, size))
				for j := range img.Pix {
					img.Pix[j] = uint8(r.IntN(256))
					if j%4 == 3 {
						img.Pix[j] = 255
					}
				}
				var b bytes.Buffer
				png.Encode(&b, img)
				tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%s/%s/%02d.png", split, class, i), Mode: 0o644, Size: int64(b.Len()), Typeflag: tar.TypeReg})
				tw.Write(b.Bytes())
			}
		}
	}
	tw.Close()
	zw.Close()
	p := filepath.Join(t.TempDir(), "noise.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVQVAEEncodeEqualsModel runs download (16×16 noise images, 4×4 codes) → vqvae-train → vqvae-encode and
// checks every record against vqvae.Encode of the same image in the same
// batch, the carved val split, and the manifest's code statistics. The
// images are distinct noise, so their code grids differ (checked): a
// record given another image's codes fails, and so does any input scaling
// but the reference's p/255 − 0.5, computed here in float64 apart from
// vqvae.AppendInput (a scaling of p/256 changes the codes: checked too).
func TestVQVAEEncodeEqualsModel(t *testing.T) {
	root := t.TempDir()
	yaml := vqvaeYAML(root, noiseArchive(t, 16), "") + "vqvae_encode: {batch: 5, val_fraction: 0.25, seed: 3}\n"
	p, err := runUntil(t, yaml, "vqvae-encode", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	em, dl := p.byName["vqvae-encode"].Manifest, p.byName["download"].Manifest
	cfg, weights, err := ReadVQVAE(p.byName["vqvae-train"].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pipelines.LoadVQVAE(ctx, weights)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]records.Tokens{}
	splitOf := map[string]string{}
	for _, split := range []string{"train", "val", "test"} {
		for _, tk := range readAllTokens(t, em, split) {
			got[tk.Key], splitOf[tk.Key] = tk, split
		}
	}
	// The reference: each download shard's images in batches of 5, in
	// shard order, through vqvae.Encode.
	want := 0
	grids := map[string]bool{}
	scaleMatters := false
	for _, f := range dl.Files {
		if f.Split == "" {
			continue
		}
		other := referenceCodesScaled(t, dl.Path(f.Name), m, 5, 256)
		for i, r := range referenceCodes(t, dl.Path(f.Name), m, 5) {
			grids[fmt.Sprint(r.Tok)] = true
			if fmt.Sprint(other[i].Tok) != fmt.Sprint(r.Tok) {
				scaleMatters = true
			}
			want++
			g, ok := got[r.Key]
			if !ok {
				t.Fatalf("image %s: no record in the encoded shards", r.Key)
			}
			if g.H != 4 || g.W != 4 || g.Vocab != cfg.K || g.Label != r.Label || fmt.Sprint(g.Tok) != fmt.Sprint(r.Tok) {
				t.Fatalf("image %s: stage %+v, vqvae.Encode %+v", r.Key, g, r)
			}
			if f.Split == "test" && splitOf[r.Key] != "test" || f.Split == "train" && splitOf[r.Key] == "test" {
				t.Fatalf("image %s of %s landed in %s", r.Key, f.Split, splitOf[r.Key])
			}
		}
	}
	if want != len(got) || want != 24 {
		t.Fatalf("%d records encoded, %d images downloaded (want 24)", len(got), want)
	}
	// The test's own power: swapped codes and a wrong scaling must show.
	if len(grids) != 24 {
		t.Fatalf("%d distinct code grids among 24 images: the test could not tell every image apart", len(grids))
	}
	if !scaleMatters {
		t.Fatal("inputs scaled by 1/256 give the same codes as 1/255: the test could not tell the scalings apart")
	}
	if n := len(readAllTokens(t, em, "val")); n == 0 || n == 12 {
		t.Fatalf("val_fraction 0.25 carved %d of 12 train images", n)
	}
	if out, err := ReadTokensOutput(em); err != nil || out.Vocab != cfg.K {
		t.Fatalf("vocab %d (%v), want %d", out.Vocab, err, cfg.K)
	}
	// Codes used per split, recounted from the records.
	used := map[string]map[uint16]bool{}
	for k, tk := range got {
		if used[splitOf[k]] == nil {
			used[splitOf[k]] = map[uint16]bool{}
		}
		for _, c := range tk.Tok {
			used[splitOf[k]][c] = true
		}
	}
	for split, u := range used {
		cu := em.Meta["codes_used"].(map[string]any)[split].(float64)
		pp := em.Meta["perplexity"].(map[string]any)[split].(float64)
		if int(cu) != len(u) || pp < 1 || pp > cu+1e-9 {
			t.Fatalf("%s: meta codes_used %v perplexity %v; records use %d codes", split, cu, pp, len(u))
		}
	}
}

// TestVQVAEEncodeErrors: sizes the factor does not divide and a bad
// section fail with the key named.
func TestVQVAEEncodeErrors(t *testing.T) {
	cases := []struct{ extra, want string }{
		{"vqvae_encode: {resize: [6, 6]}\n", "vqvae_encode.resize = [6 6]: the VQ-VAE's factor 4 must divide it"},
		{"vqvae_encode: {batch: -1}\n", "vqvae_encode.batch is -1: want 1..65536"},
		{"tokens: vq\n", `tokens: "vq", want palette or vqvae`},
		{"tokens: vqvae\ntrain: {hflip: 0.5}\n", "train.hflip = 0.5 with tokens: vqvae"},
		{"vqvae_encode: {val_fraction: 1.5}\n", "vqvae_encode.val_fraction is 1.5: want [0, 1)"},
	}
	src := folderArchive(t, 8, nil)
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			_, err := planAndRun(vqvaeYAML(t.TempDir(), src, "")+c.extra, "vqvae-encode", Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// TestVQVAETokensEndToEnd runs the whole workflow on VQ codes (tokens:
// vqvae) on prism: download → vqvae-train → vqvae-encode → train →
// probe-baselines → probe → sample, without palette or quantize, and
// checks that sample and show decode codes through the VQ-VAE.
func TestVQVAETokensEndToEnd(t *testing.T) {
	root := t.TempDir()
	yaml := vqvaeYAML(root, folderArchive(t, 8, nil), "") + `tokens: vqvae
vqvae_encode: {batch: 4, val_fraction: 0.25}
train: {model: nano, layers: 2, d: 32, heads: 4, batch: 4, steps: 6, warmup_steps: 2, lr: 0.01, eval_every: 3, eval_records: 4, checkpoint_every: 3, threads: 2}
probe: {batch: 5, l2: [0.1, 0.001], max_iter: 7, concat: [1, 2]}
sample: {unconditional: 3, images: 2, completions: 2, keep: 0.5, scale: 1}
finetune: {batch: 4, steps: 4, warmup_steps: 1, eval_every: 2, eval_records: 4, checkpoint_every: 2, pad: 1, threads: 2}
`
	p, err := runUntil(t, yaml, "", Options{}) // "": the whole run, as igpt run does
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"palette", "quantize"} {
		if p.byName[name].Done() {
			t.Errorf("%s ran for tokens: vqvae", name)
		}
	}
	tm := p.byName["train"].Manifest
	if tm.Inputs[0].Stage != "vqvae-encode" {
		t.Fatalf("train read %v", tm.Inputs)
	}
	params, _, err := LoadTrained(context.Background(), tm)
	if err != nil {
		t.Fatal(err)
	}
	if params.Config.Vocab != 16 || params.Config.Seq != 4 {
		t.Fatalf("model vocab %d seq %d, want the 16 codes of a 2×2 grid", params.Config.Vocab, params.Config.Seq)
	}
	pm := p.byName["probe"].Manifest
	if b, err := os.ReadFile(pm.Path(ReportMD)); err != nil || !strings.Contains(string(b), "raw pixels") || !strings.Contains(string(b), "concat L1+L2") {
		t.Fatalf("probe report: %v\n%s", err, b)
	}
	// Fine-tuning reads the codes and crops them (pad 1 code), never flips.
	fo, err := ReadFinetuneOutput(p.byName["finetune"].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if fo.Init != FinetunePretrained || fo.Steps != 4 {
		t.Fatalf("finetune output %+v", fo)
	}
	// Samples decode through the VQ-VAE: 8×8 pixels per 2×2 code grid.
	sm := p.byName["sample"].Manifest
	for _, f := range []string{SamplesPNG, CompletionsPNG} {
		b, err := os.ReadFile(sm.Path(f))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if w := img.Bounds().Dx(); f == SamplesPNG && w != 3*8+3*4 {
			t.Errorf("%s is %d pixels wide, want 3 tiles of 8 pixels and their gaps", f, w)
		}
	}
	run, err := loadRun(context.Background(), p.byName["train"].Dir)
	if err != nil {
		t.Fatal(err)
	}
	if run.codec.Factor() != 4 || run.h != 2 || run.w != 2 {
		t.Fatalf("run codec factor %d grid %d×%d", run.codec.Factor(), run.h, run.w)
	}
}

// TestVQCodecDecodeEqualsReconstruct: decoding an encoded image gives the
// bytes of vqvae's Reconstruct, and a palette-trained model refuses codes.
func TestVQCodecDecodeEqualsReconstruct(t *testing.T) {
	root := t.TempDir()
	p, err := runUntil(t, vqvaeYAML(root, folderArchive(t, 8, nil), ""), "vqvae-train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	codec, err := codecOf(ctx, p.byName["vqvae-train"].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	m := codec.(*vqCodec).m
	dl := p.byName["download"].Manifest
	n := 0
	err = pipelines.ScanShard(ctx, dl.Path(dl.Split("test")[0].Name), func(img records.Image) error {
		tok, err := codec.Encode(img)
		if err != nil {
			return err
		}
		got, err := codec.Decode(tok.Tok, tok.H, tok.W)
		if err != nil {
			return err
		}
		x := make([]float32, len(img.Pix))
		for i, v := range img.Pix {
			x[i] = float32(v)/255 - 0.5
		}
		rec := make([]float32, len(x))
		if err := m.Reconstruct(rec, x, 1, img.H, img.W); err != nil {
			return err
		}
		for i := range rec {
			if got[i] != byte(vqvae.OutputPixel(rec[i])) {
				return fmt.Errorf("image %s: pixel byte %d: decode(encode) %d, Reconstruct %v", img.Key, i, got[i], vqvae.OutputPixel(rec[i]))
			}
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("%d images: %v", n, err)
	}
}

// referenceCodes encodes a download shard's images with vqvae.Encode in
// batches of batch, in shard order, as the stage must (pixels scaled to
// v/255 − 0.5, as vqvae-train feeds them).
func referenceCodes(t *testing.T, shard string, m *vqvae.Model, batch int) []records.Tokens {
	t.Helper()
	return referenceCodesScaled(t, shard, m, batch, 255)
}

// referenceCodesScaled encodes with inputs p/scale − 0.5, computed in
// float64 independently of vqvae.AppendInput.
func referenceCodesScaled(t *testing.T, shard string, m *vqvae.Model, batch int, scale float64) []records.Tokens {
	t.Helper()
	var imgs []records.Image
	if err := pipelines.ScanShard(context.Background(), shard, func(img records.Image) error {
		imgs = append(imgs, img)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var ref []records.Tokens
	f := m.Cfg.Factor
	for lo := 0; lo < len(imgs); lo += batch {
		b := imgs[lo:min(lo+batch, len(imgs))]
		h, w := b[0].H, b[0].W
		var x []float32
		for _, img := range b {
			for _, v := range img.Pix {
				x = append(x, float32(float64(v)/scale-0.5))
			}
		}
		codes := make([]uint16, len(b)*(h/f)*(w/f))
		if err := m.Encode(codes, x, len(b), h, w); err != nil {
			t.Fatal(err)
		}
		per := (h / f) * (w / f)
		for i, img := range b {
			ref = append(ref, records.Tokens{Key: img.Key, Label: img.Label, H: h / f, W: w / f, Vocab: m.Cfg.K, Tok: codes[i*per : (i+1)*per]})
		}
	}
	return ref
}
