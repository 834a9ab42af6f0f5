package model

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// Files of a checkpoint store: one step-NNNNNNNN folder per checkpoint,
// and LATEST naming the newest complete one.
const (
	LatestFile  = "LATEST"
	WeightsFile = "model.safetensors"
	OptimFile   = "optimizer.safetensors"
	StateFile   = "state.json"
)

// CheckpointFS is the file access a CheckpointStore needs: package stages
// passes one over internal/storage (local folders or gs://), keeping this
// package free of storage and Beam. WriteFile must be atomic, List must
// list every file under a folder recursively, and a missing file's error
// must wrap fs.ErrNotExist.
type CheckpointFS interface {
	ReadFile(ctx context.Context, path string) ([]byte, error)
	WriteFile(ctx context.Context, path string, data []byte) error
	List(ctx context.Context, dir string) ([]string, error)
	RemoveAll(ctx context.Context, dir string) error
	Join(base string, elem ...string) string
	// Within joins rel, a name read from a file (LATEST), to base, and
	// refuses one that leads outside base (storage.Within).
	Within(base, rel string) (string, error)
}

// CheckpointStore keeps a training run's checkpoints in Dir: each step's
// files in their own folder, then LATEST pointed at it, then all but the
// newest Keep folders removed. Every file is written atomically and LATEST
// last, so a run killed at any moment leaves the previous checkpoint
// intact. The train and vqvae-train stages both use it.
type CheckpointStore struct {
	FS   CheckpointFS
	Dir  string
	Keep int
}

// CheckpointName is the folder name of step's checkpoint.
func CheckpointName(step int) string { return fmt.Sprintf("step-%08d", step) }

// CheckpointFile is one file of a checkpoint.
type CheckpointFile struct {
	Name string
	Data []byte
}

// Save writes step's files into their folder, calls beforeLatest (the
// trainer's metrics, which must cover the checkpoint before it is the one
// resumed from), points LATEST at the folder and prunes old folders.
func (s CheckpointStore) Save(ctx context.Context, step int, files []CheckpointFile, beforeLatest func() error) error {
	dir := s.FS.Join(s.Dir, CheckpointName(step))
	for _, f := range files {
		if err := s.FS.WriteFile(ctx, s.FS.Join(dir, f.Name), f.Data); err != nil {
			return err
		}
	}
	if beforeLatest != nil {
		if err := beforeLatest(); err != nil {
			return err
		}
	}
	if err := s.FS.WriteFile(ctx, s.FS.Join(s.Dir, LatestFile), []byte(CheckpointName(step)+"\n")); err != nil {
		return err
	}
	return s.prune(ctx, step)
}

// prune removes all but the newest Keep checkpoint folders, never the
// newest nor the one LATEST names (step), whatever Keep says.
func (s CheckpointStore) prune(ctx context.Context, latest int) error {
	files, err := s.FS.List(ctx, s.Dir)
	if err != nil {
		return err
	}
	steps := map[string]bool{}
	for _, f := range files {
		rel := strings.TrimPrefix(strings.TrimPrefix(f, s.Dir), "/")
		if d, _, ok := strings.Cut(rel, "/"); ok && strings.HasPrefix(d, "step-") {
			steps[d] = true
		}
	}
	var names []string
	for n := range steps {
		names = append(names, n)
	}
	sort.Strings(names)
	keep := max(1, s.Keep)
	for i := 0; i+keep < len(names); i++ {
		if names[i] == CheckpointName(latest) {
			continue
		}
		if err := s.FS.RemoveAll(ctx, s.FS.Join(s.Dir, names[i])); err != nil {
			return err
		}
	}
	return nil
}

// Prune removes old checkpoint folders as Save does, keeping latest.
func (s CheckpointStore) Prune(ctx context.Context, latest int) error { return s.prune(ctx, latest) }

// Latest returns the folder LATEST names, or "" when there is no
// checkpoint yet.
func (s CheckpointStore) Latest(ctx context.Context) (string, error) {
	b, err := s.FS.ReadFile(ctx, s.FS.Join(s.Dir, LatestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	dir, err := s.FS.Within(s.Dir, strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("checkpoints: %s: %w; the file is damaged or forged: delete it (and the checkpoint folders) to start over", s.FS.Join(s.Dir, LatestFile), err)
	}
	return dir, nil
}
