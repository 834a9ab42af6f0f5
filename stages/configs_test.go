package stages

import (
	"path/filepath"
	"slices"
	"testing"
)

// TestShippedConfigsLoad loads every config under configs/: a typo in a
// key or a value out of range fails here, not after an hour of training.
func TestShippedConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := LoadConfig(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCompanionConfigsShareStages checks that a config written to run
// beside another (a baseline of the same experiment) plans the same keys
// for every stage but the ones it exists to change, so that it reuses the
// other's outputs instead of redoing them.
func TestCompanionConfigsShareStages(t *testing.T) {
	for _, c := range []struct {
		base, companion string
		differ          []string
	}{
		{"cifar10-2h.yaml", "cifar10-2h-supervised.yaml", []string{"finetune"}},
	} {
		t.Run(c.companion, func(t *testing.T) {
			load := func(name string) map[string]string {
				cfg, err := LoadConfig(filepath.Join("../configs", name))
				if err != nil {
					t.Fatal(err)
				}
				return keys(t, cfg, registry)
			}
			base, comp := load(c.base), load(c.companion)
			for st, k := range base {
				if slices.Contains(c.differ, st) {
					if comp[st] == k {
						t.Errorf("%s: key %s in both configs; the companion exists to change it", st, k)
					}
					continue
				}
				if comp[st] != k {
					t.Errorf("%s: key %s in %s, %s in %s: the sections it depends on differ", st, k, c.base, comp[st], c.companion)
				}
			}
		})
	}
}
