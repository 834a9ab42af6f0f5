package stages

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/pipelines"
)

// TestVQVAEEncodeEqualsModel runs download → vqvae-train → vqvae-encode and
// checks every record against vqvae.Encode of the same image in the same
// batch, the carved val split, and the manifest's code statistics.
func TestVQVAEEncodeEqualsModel(t *testing.T) {
	root := t.TempDir()
	yaml := vqvaeYAML(root, folderArchive(t, 8, nil), "") + "vqvae_encode: {batch: 5, val_fraction: 0.25, seed: 3}\n"
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
	for _, f := range dl.Files {
		if f.Split == "" {
			continue
		}
		enc := pipelines.NewVQEncoder(m, [2]int{}, 5)
		var ref []records.Tokens
		flush := func() {
			toks, err := enc.Flush()
			if err != nil {
				t.Fatal(err)
			}
			ref = append(ref, toks...)
		}
		err := pipelines.ScanShard(ctx, dl.Path(f.Name), func(img records.Image) error {
			if err := enc.Add(img); err != nil {
				t.Fatal(err)
			}
			if enc.Full() {
				flush()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		flush()
		for _, r := range ref {
			want++
			g, ok := got[r.Key]
			if !ok {
				t.Fatalf("image %s: no record in the encoded shards", r.Key)
			}
			if g.H != 2 || g.W != 2 || g.Vocab != cfg.K || g.Label != r.Label || fmt.Sprint(g.Tok) != fmt.Sprint(r.Tok) {
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
		{"vqvae_encode: {batch: -1}\n", "vqvae_encode.batch = -1"},
		{"vqvae_encode: {val_fraction: 1.5}\n", "vqvae_encode.val_fraction = 1.5"},
	}
	src := folderArchive(t, 8, nil)
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(vqvaeYAML(t.TempDir(), src, "") + c.extra))
			if err == nil {
				cfg.Path = "test.yaml"
				var p *Plan
				if p, err = NewPlan(context.Background(), cfg); err == nil {
					err = p.RunUntil(context.Background(), "vqvae-encode", Options{})
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}
