package stages

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

// TrainedWeights returns the path of a train folder's final weights.
func TrainedWeights(ctx context.Context, runDir string) (string, error) {
	m, err := ReadManifest(ctx, strings.TrimSuffix(runDir, "/"))
	if err != nil {
		return "", fmt.Errorf("%s is not a finished train stage folder: %w", runDir, err)
	}
	ckpt, ok := m.Meta["checkpoint"].(string)
	if m.Stage != "train" || !ok {
		return "", fmt.Errorf("%s holds a %s stage, not a train stage", runDir, m.Stage)
	}
	if !localName(ckpt) {
		return "", fmt.Errorf("manifest %s: meta.checkpoint %q is not a path inside the train folder; the manifest is damaged or forged", storage.Join(m.Dir, ManifestName), ckpt)
	}
	return m.Path(storage.Join(ckpt, WeightsFile)), nil
}

// ExportHF writes a train folder's final weights as a Hugging Face
// ImageGPT model: out/config.json and out/model.safetensors (local or gs://).
func ExportHF(ctx context.Context, runDir, out string) error {
	w, err := TrainedWeights(ctx, runDir)
	if err != nil {
		return err
	}
	b, err := storage.ReadFile(ctx, w)
	if err != nil {
		return err
	}
	p, _, err := model.LoadCheckpoint(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("export-hf: %s: %w", w, err)
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

// ImportHF reads a Hugging Face ImageGPT folder (config.json and
// model.safetensors, e.g. published iGPT weights) and writes it as an igpt
// checkpoint file.
func ImportHF(ctx context.Context, dir, out string) (model.Config, error) {
	cfg, err := storage.ReadFile(ctx, storage.Join(dir, "config.json"))
	if err != nil {
		return model.Config{}, err
	}
	st, err := storage.ReadFile(ctx, storage.Join(dir, "model.safetensors"))
	if err != nil {
		return model.Config{}, err
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
