package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tempConfig writes a config under a temp dir and returns its path.
func tempConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunnerFlagCheckedAtLoad: --runner=prsm is refused before anything is
// planned or read, by run and stage, dry runs included (a dry run used to
// print a normal plan).
func TestRunnerFlagCheckedAtLoad(t *testing.T) {
	cfg := tempConfig(t, "root: "+t.TempDir()+"\ndataset: {name: mnist}\n")
	t.Cleanup(func() { freshFlags(t, "runner", "", "dry_run", "false") })
	for _, args := range [][]string{{"run", cfg}, {"stage", "download", cfg}} {
		for _, dry := range []string{"false", "true"} {
			freshFlags(t, "runner", "prsm", "dry_run", dry)
			err := dispatch(context.Background(), args)
			if err == nil || !strings.Contains(err.Error(), `--runner: runner "prsm" is not one igpt runs (prism, direct, dataflow); did you mean prism?`) {
				t.Errorf("%q --runner=prsm --dry_run=%s: %v", args, dry, err)
			}
		}
	}
}
