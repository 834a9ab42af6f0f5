package stages

import (
	"path/filepath"
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
