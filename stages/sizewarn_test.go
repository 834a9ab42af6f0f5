package stages

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSizeWarning: a folder of 224×224 images with the quickstart's
// quantize.resize [16, 16] is warned about (palette on 224² pixels, a 14×
// shrink, 150,528 raw-pixel dimensions) with download.resize suggested;
// the quickstart's own 32×32 at 16×16, and the same folder with
// download.resize set, are not.
func TestSizeWarning(t *testing.T) {
	src := t.TempDir()
	for _, split := range []string{"train", "test"} {
		d := filepath.Join(src, split, "cats")
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "a.png"), pngBytes(224, 224, 7), 0o644)
	}
	parse := func(yaml string) *Config {
		cfg, err := ParseConfig([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	big := parse("dataset: {name: folder, source: " + src + "}\nquantize: {resize: [16, 16]}\n")
	got := SizeWarning(big)
	for _, want := range []string{"images are 224×224", "14× the 16×16 token grid", "224×224 pixels per image", "150528 dimensions", "set download.resize: 32"} {
		if !strings.Contains(got, want) {
			t.Errorf("warning for 224×224 images at 16×16 has no %q: %q", want, got)
		}
	}
	if got := SizeWarning(parse("dataset: {name: folder, source: " + src + "}\n")); !strings.Contains(got, "50176 tokens of context") {
		t.Errorf("224×224 images without quantize.resize: %q", got)
	}
	for name, yaml := range map[string]string{
		"quickstart":      "dataset: {name: cifar10}\nquantize: {resize: [16, 16]}\n",
		"resized":         "dataset: {name: folder, source: " + src + "}\ndownload: {resize: 32}\nquantize: {resize: [16, 16]}\n",
		"stated 32x32":    "dataset: {name: folder, source: " + src + ", image_size: [32, 32]}\n",
		"VQ codes":        "tokens: vqvae\ndataset: {name: cifar10}\n",
		"fashion-mnist14": "dataset: {name: fashion-mnist}\nquantize: {resize: [14, 14]}\n",
	} {
		if got := SizeWarning(parse(yaml)); got != "" {
			t.Errorf("%s: unexpected warning %q", name, got)
		}
	}
}
