package tools

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/stages"
)

// ExportHF writes a train folder's final weights as a Hugging Face
// ImageGPT model: out/config.json and out/model.safetensors (local or gs://).
func ExportHF(ctx context.Context, runDir, out string) error {
	m, err := stages.ReadManifest(ctx, strings.TrimSuffix(runDir, "/"))
	if err != nil {
		return fmt.Errorf("export-hf: %s is not a finished train stage folder: %w", runDir, err)
	}
	p, _, err := stages.LoadTrained(ctx, m)
	if err != nil {
		return fmt.Errorf("export-hf: %w", err)
	}
	var cfg, st bytes.Buffer
	if err := model.WriteHFConfig(&cfg, p.Config); err != nil {
		return err
	}
	if err := model.WriteHFModel(&st, p); err != nil {
		return err
	}
	if err := storage.WriteFile(ctx, storage.Join(out, "model.safetensors"), st.Bytes()); err != nil {
		return err
	}
	return storage.WriteFile(ctx, storage.Join(out, "config.json"), cfg.Bytes())
}

// Caps of the files ImportHF reads: a config.json is a few KB; the
// largest published iGPT (XL, 6.8B parameters) is 27 GB of float32.
const (
	maxHFConfig  = 1 << 20
	maxHFWeights = 64 << 30
)

// ImportHF reads a Hugging Face ImageGPT folder (config.json and
// model.safetensors, e.g. published iGPT weights; local or gs://) and
// writes it as an igpt checkpoint file.
func ImportHF(ctx context.Context, dir, out string) (model.Config, error) {
	cfg, err := storage.ReadUserFile(ctx, storage.Join(dir, "config.json"), maxHFConfig)
	if err != nil {
		return model.Config{}, fmt.Errorf("import-hf: %w", err)
	}
	st, err := storage.ReadUserFile(ctx, storage.Join(dir, "model.safetensors"), maxHFWeights)
	if err != nil {
		return model.Config{}, fmt.Errorf("import-hf: %w (only safetensors weights are read)", err)
	}
	p, err := model.ReadHF(bytes.NewReader(cfg), bytes.NewReader(st))
	if err != nil {
		return model.Config{}, fmt.Errorf("import-hf %s: %w", dir, err)
	}
	var buf bytes.Buffer
	if err := model.SaveCheckpoint(&buf, p, map[string]string{"imported_from": dir}); err != nil {
		return model.Config{}, err
	}
	return p.Config, storage.WriteFile(ctx, out, buf.Bytes())
}
