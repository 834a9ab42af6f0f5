package stages

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunnerCheckedAtLoad: a misspelt runner in a config is refused when
// the config is loaded, with the runners there are and the nearest one
// (it used to plan normally, read the source, then exit from inside Beam).
func TestRunnerCheckedAtLoad(t *testing.T) {
	_, err := ParseConfig([]byte("runner: prsm\ndataset: {name: mnist}\n"))
	if err == nil || !strings.Contains(err.Error(), `runner: runner "prsm" is not one igpt runs (prism, direct, dataflow); did you mean prism?`) {
		t.Errorf("runner: prsm: %v", err)
	}
	for _, r := range Runners {
		if _, err := ParseConfig([]byte("runner: " + r + "\ndataset: {name: mnist}\n")); err != nil {
			t.Errorf("runner: %s: %v", r, err)
		}
	}
}

// TestUnknownRunnerLeavesNoLock: a runner that reaches a Beam stage
// unchecked (Options.Runner, as --runner sets it) fails the stage with an
// error, not an exit inside beam.Run, so the stage lock is released and no
// attempt folder is left: the next run takes no stale lock over.
func TestUnknownRunnerLeavesNoLock(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(t.TempDir(), "imgs")
	for _, split := range []string{"train", "test"} {
		d := filepath.Join(src, split, "a")
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "x.png"), pngBytes(8, 8, 9), 0o644)
	}
	_, err := runDownload(t, "root: "+root+"\ndataset: {name: folder, source: "+src+"}\n", Options{Runner: "prsm"})
	if err == nil || !strings.Contains(err.Error(), `runner "prsm" is not one igpt runs`) {
		t.Fatalf("download with runner prsm: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(root, "download", "*"))
	if len(left) != 0 {
		t.Errorf("left behind after the failed run: %q", left)
	}
}
