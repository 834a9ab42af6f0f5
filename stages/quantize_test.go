package stages

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/pipelines"
)

// runUntil runs a YAML config's stages up to and including last; a config
// that does not parse or plan fails the test.
func runUntil(t *testing.T, yaml, last string, opt Options) (*Plan, error) {
	t.Helper()
	p, err := planAndRun(yaml, last, opt)
	if p == nil {
		t.Fatal(err)
	}
	return p, err
}

// planAndRun parses a YAML config, plans it and runs it up to last; the
// plan is nil when the config does not parse or plan.
func planAndRun(yaml, last string, opt Options) (*Plan, error) {
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		return nil, err
	}
	cfg.Path = "test.yaml"
	p, err := NewPlan(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	return p, p.RunUntil(context.Background(), last, opt)
}

func readAllTokens(t *testing.T, m *Manifest, split string) []records.Tokens {
	t.Helper()
	var out []records.Tokens
	for _, f := range m.Split(split) {
		var toks []records.Tokens
		err := pipelines.ScanShard(context.Background(), m.Path(f.Name), func(r records.Tokens) error {
			toks = append(toks, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(toks)) != f.Records {
			t.Fatalf("%s: manifest says %d records, shard holds %d", f.Name, f.Records, len(toks))
		}
		out = append(out, toks...)
	}
	return out
}

func nearest(p *records.Palette, r, g, b float64) (int, float64) {
	best, bd := 0, math.Inf(1)
	for i, c := range p.Centres {
		d := (float64(c[0])-r)*(float64(c[0])-r) + (float64(c[1])-g)*(float64(c[1])-g) + (float64(c[2])-b)*(float64(c[2])-b)
		if d < bd {
			best, bd = i, d
		}
	}
	return best, bd
}

// TestPrepareExactSubset runs download → palette → quantize on the exact
// CIFAR-10 subset and checks the palette's error and every token against a
// brute-force nearest-colour search over the original pixels.
func TestPrepareExactSubset(t *testing.T) {
	archive, train, test := cifarBinaryArchive(t)
	src := filepath.Join(t.TempDir(), "cifar-10-binary.tar.gz")
	os.WriteFile(src, archive, 0o644)
	yaml := fmt.Sprintf("root: %s\ndataset: {name: cifar10, source: %s, sha256: %s}\npalette: {k: 32, seed: 3}\nquantize: {seed: 7}\n", t.TempDir(), src, sha(archive))
	p, err := runUntil(t, yaml, "quantize", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pal, _, err := ReadPalette(ctx, p.byName["palette"].Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if pal.K != 32 || pal.Pixels != 4000*1024 {
		t.Fatalf("palette k=%d pixels=%d", pal.K, pal.Pixels)
	}
	// The palette's reported error equals brute force over every pixel.
	var sse float64
	for i := 0; i < 4000; i++ {
		rec := train[i*3073+1 : (i+1)*3073]
		for px := 0; px < 1024; px++ {
			_, d := nearest(pal, float64(rec[px]), float64(rec[1024+px]), float64(rec[2048+px]))
			sse += d
		}
	}
	if got := sse / float64(pal.Pixels); math.Abs(got-pal.MSE) > 1e-6*got {
		t.Fatalf("palette MSE %v, brute force %v", pal.MSE, got)
	}

	qm := p.byName["quantize"].Manifest
	trainToks, valToks, testToks := readAllTokens(t, qm, "train"), readAllTokens(t, qm, "val"), readAllTokens(t, qm, "test")
	if len(trainToks)+len(valToks) != 4000 || len(testToks) != 1000 {
		t.Fatalf("train %d + val %d, test %d", len(trainToks), len(valToks), len(testToks))
	}
	if len(valToks) < 300 || len(valToks) > 500 {
		t.Fatalf("val carved %d of 4000, want about 10%%", len(valToks))
	}
	check := func(toks []records.Tokens, src []byte) {
		for _, tk := range toks {
			var idx int
			fmt.Sscanf(tk.Key[strings.LastIndexByte(tk.Key, '/')+1:], "%d", &idx)
			rec := src[idx*3073 : (idx+1)*3073]
			if tk.Label != int(rec[0]) || tk.Vocab != 32 || tk.H != 32 || tk.W != 32 {
				t.Fatalf("%s: label %d vocab %d", tk.Key, tk.Label, tk.Vocab)
			}
			for px, tok := range tk.Tok {
				want, dWant := nearest(pal, float64(rec[1+px]), float64(rec[1025+px]), float64(rec[2049+px]))
				if int(tok) != want {
					// A tie between two equally near centres may go either way.
					c := pal.Centres[tok]
					r, g, b := float64(rec[1+px]), float64(rec[1025+px]), float64(rec[2049+px])
					d := (float64(c[0])-r)*(float64(c[0])-r) + (float64(c[1])-g)*(float64(c[1])-g) + (float64(c[2])-b)*(float64(c[2])-b)
					if d > dWant+1e-3 {
						t.Fatalf("%s pixel %d: token %d (d² %v), nearest is %d (d² %v)", tk.Key, px, tok, d, want, dWant)
					}
				}
			}
		}
	}
	check(trainToks, train)
	check(valToks, train)
	check(testToks, test)

	// A second run skips all three stages.
	p2, err := runUntil(t, yaml, "quantize", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range p2.Steps {
		if st.Manifest == nil {
			continue // downstream of quantize
		}
		if !st.Manifest.Finished.Equal(p.byName[st.Stage.Name()].Manifest.Finished) {
			t.Errorf("stage %s ran again", st.Stage.Name())
		}
	}
}

// TestQuantizeBadPalette checks the errors for a missing, replaced or
// mismatched palette.
func TestQuantizeBadPalette(t *testing.T) {
	root := t.TempDir()
	yaml := fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s}\npalette: {k: 4}\n", root, folderArchive(t, 8, nil))
	p, err := runUntil(t, yaml, "quantize", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pm := p.byName["palette"].Manifest
	palPath := pm.Path(PaletteFile)
	good, _ := os.ReadFile(palPath)

	os.Remove(palPath)
	err = p.RunOne(ctx, "quantize", Options{Force: true})
	if err == nil || !strings.Contains(err.Error(), palPath) || !strings.Contains(err.Error(), "igpt stage palette") {
		t.Fatalf("missing palette: %v", err)
	}

	other := &records.Palette{K: 4, Centres: [][3]float32{{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}}}
	b, _ := records.EncodePalette(other)
	os.WriteFile(palPath, b, 0o644)
	err = p.RunOne(ctx, "quantize", Options{Force: true})
	if err == nil || !strings.Contains(err.Error(), "does not match its manifest") {
		t.Fatalf("replaced palette: %v", err)
	}

	os.WriteFile(palPath, []byte("garbage"), 0o644)
	delete(pm.Meta, "palette_sha256")
	if _, _, err := ReadPalette(ctx, pm); err == nil || !strings.Contains(err.Error(), "not a palette file") {
		t.Fatalf("garbage palette: %v", err)
	}

	os.WriteFile(palPath, good, 0o644)
	p.Config.Palette.K = 8 // the config now asks for another k than the file holds
	err = p.RunOne(ctx, "quantize", Options{Force: true})
	if err == nil || !strings.Contains(err.Error(), "palette.k = 8") {
		t.Fatalf("mismatched k: %v", err)
	}
}

// TestPrepareGreyAndGCS runs the whole prepare on a grey image folder with
// its root on the GCS emulator: a grey palette holds exactly the distinct
// grey levels, and every output is read back from gs://.
func TestPrepareGreyAndGCS(t *testing.T) {
	testutil.FakeGCS(t, "bkt")
	yaml := fmt.Sprintf("root: gs://bkt/exp\ndataset: {name: folder, source: %s, channels: 1}\npalette: {k: 512}\nquantize: {val_fraction: 0, resize: [4, 4]}\n", folderArchive(t, 8, nil))
	p, err := runUntil(t, yaml, "quantize", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pm := p.byName["palette"].Manifest
	pal, _, err := ReadPalette(ctx, pm)
	if err != nil {
		t.Fatal(err)
	}
	if pal.K != pal.Distinct || pal.K > 256 || pal.MSE != 0 {
		t.Fatalf("grey palette: k=%d distinct=%d mse=%v", pal.K, pal.Distinct, pal.MSE)
	}
	for _, c := range pal.Centres {
		if c[0] != c[1] || c[1] != c[2] {
			t.Fatalf("grey palette has colour %v", c)
		}
	}
	qm := p.byName["quantize"].Manifest
	if !strings.HasPrefix(qm.Dir, "gs://bkt/exp/quantize/") {
		t.Fatalf("quantize dir %s", qm.Dir)
	}
	toks := readAllTokens(t, qm, "train")
	if len(toks) != 12 || len(qm.Split("val")) != 0 || toks[0].H != 4 || toks[0].W != 4 {
		t.Fatalf("%d train records (%dx%d), val shards %d", len(toks), toks[0].H, toks[0].W, len(qm.Split("val")))
	}
	if ok, _ := storage.Exists(ctx, pm.Path(PalettePNG)); !ok {
		t.Fatal("palette.png missing on gs://")
	}
}

// TestStageWithoutUpstream runs palette alone on a fresh root: the error
// names the missing download output and the command that makes it.
func TestStageWithoutUpstream(t *testing.T) {
	cfg, err := ParseConfig([]byte(fmt.Sprintf("root: %s\ndataset: {name: folder, source: x.tar}\n", t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Path = "exp.yaml"
	p, err := NewPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = p.RunOne(context.Background(), "palette", Options{})
	if !errors.Is(err, ErrUpstreamMissing) || !strings.Contains(err.Error(), "igpt stage download exp.yaml") || !strings.Contains(err.Error(), "download/") {
		t.Fatalf("palette without download: %v", err)
	}
}
