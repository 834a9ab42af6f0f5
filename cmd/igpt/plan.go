package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/stages"
)

// maxConfigFile caps a config file: igpt's are a few KB.
const maxConfigFile = 4 << 20

// loadPlan reads the config at path, applies --root and --source, and
// plans its stages. A relative root is taken from the current directory;
// when that folder does not exist but the same relative root beside the
// config (or one folder up, the repository of configs/x.yaml) holds
// finished stages of this plan, it stops and says so rather than plan to
// redo everything in a new folder.
func loadPlan(ctx context.Context, path string) (*stages.Plan, error) {
	// The config is a user-given file: a FIFO or a device is refused before
	// LoadConfig reads it.
	if _, err := storage.StatUserFile(ctx, path, maxConfigFile); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := stages.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	if r := *runners.Runner; r != "" {
		if err := stages.CheckRunner("--runner", r); err != nil {
			return nil, err
		}
	}
	if *source != "" {
		cfg.Dataset.Source = *source
	}
	if *root != "" {
		cfg.Root = *root
		plan, err := stages.NewPlan(ctx, cfg)
		if err == nil {
			warnSize(os.Stderr, plan)
		}
		return plan, err
	}
	plan, err := stages.NewPlan(ctx, cfg)
	if err != nil {
		return nil, err
	}
	warnSize(os.Stderr, plan)
	if other := rootElsewhere(ctx, cfg, plan); other != "" {
		return nil, fmt.Errorf("config %s: root %q is taken from the current directory, where %s does not exist, "+
			"but %s holds this config's finished stages: run from %s, or pass --root=%s to use them "+
			"(--root=%s starts afresh here)", path, cfg.Root, absPath(cfg.Root), other, filepath.Dir(other), other, cfg.Root)
	}
	return plan, nil
}

// rootElsewhere returns the folder that holds the plan's finished stages
// under the config's relative root resolved from the config's folder or
// its parent, when the root resolved from the current directory does not
// exist and nothing of the plan is done there; "" otherwise.
func rootElsewhere(ctx context.Context, cfg *stages.Config, plan *stages.Plan) string {
	if cfg.Root == "" || storage.IsGCS(cfg.Root) || filepath.IsAbs(cfg.Root) || strings.Contains(cfg.Root, "://") {
		return ""
	}
	if _, err := os.Stat(cfg.Root); !os.IsNotExist(err) {
		return ""
	}
	for _, s := range plan.Steps {
		if s.Done() {
			return ""
		}
	}
	dir := filepath.Dir(absPath(cfg.Path))
	for _, d := range []string{dir, filepath.Dir(dir)} {
		cand := filepath.Join(d, cfg.Root)
		if cand == absPath(cfg.Root) {
			continue
		}
		if _, err := os.Stat(cand); err != nil {
			continue
		}
		c := *cfg
		c.Root = cand
		p, err := stages.NewPlan(ctx, &c)
		if err != nil {
			continue
		}
		for _, s := range p.Steps {
			if s.Done() {
				return cand
			}
		}
	}
	return ""
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// warnSize prints stages.SizeWarning for a plan whose quantize stage is
// still to run: images much larger than the token grid were planned
// without a word.
func warnSize(w io.Writer, plan *stages.Plan) {
	if q, err := plan.Step("quantize"); err != nil || q.Done() {
		return
	}
	if msg := stages.SizeWarning(plan.Config); msg != "" {
		fmt.Fprintf(w, "igpt: warning: config %s: %s\n", plan.Config.Path, msg)
	}
}
