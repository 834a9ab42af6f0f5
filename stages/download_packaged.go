package stages

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/igpt/igpt/internal/datasets"
)

// packagedRoots are the folders under which system packages install
// datasets by name: Debian's dataset-fashion-mnist (apt install
// dataset-fashion-mnist) puts the four official idx .gz files in
// /usr/share/datasets/fashion-mnist. A test points it at a temp dir.
var packagedRoots = []string{"/usr/share/datasets"}

// packagedBy names the system package that installs a dataset there, for
// the offline hint.
var packagedBy = map[string]string{"fashion-mnist": "dataset-fashion-mnist (Debian, Ubuntu: apt install dataset-fashion-mnist)"}

// packagedSource returns the folder <root>/<dataset name> under one of
// packagedRoots when it holds every file of spec and each verifies against
// the registry's checksums (the same payload as the official download, so
// the stage key does not change); "" when there is none. A copy that fails
// its checksum is named in a warning and left alone: the download goes on
// from the official URL.
func packagedSource(spec datasets.Spec, log *slog.Logger) string {
	if len(spec.Files) == 0 {
		return ""
	}
	for _, root := range packagedRoots {
		dir := filepath.Join(root, spec.Name)
		complete := true
		for _, f := range spec.Files {
			if st, err := os.Stat(filepath.Join(dir, f.Name)); err != nil || !st.Mode().IsRegular() {
				complete = false
				break
			}
		}
		if !complete {
			continue
		}
		for _, f := range spec.Files {
			if err := datasets.Verify(filepath.Join(dir, f.Name), f); err != nil {
				log.Warn("download: the system package's copy does not verify; not using it", "dir", dir, "err", err)
				complete = false
				break
			}
		}
		if complete {
			return dir
		}
	}
	return ""
}

// packageHint is, for a dataset a system package installs, how to install
// it; "" otherwise.
func packageHint(spec datasets.Spec) string {
	if p, ok := packagedBy[spec.Name]; ok {
		return "; or install the package " + p + ", which igpt finds in " + filepath.Join(packagedRoots[0], spec.Name)
	}
	return ""
}
