package stages

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/datasets"
)

// packagedSpec writes a two-file dataset "toy" under root/toy, as a system
// package would install it, and returns its spec (checksums of those files).
func packagedSpec(t *testing.T, root string) datasets.Spec {
	t.Helper()
	spec := datasets.Spec{Name: "toy", Format: datasets.FormatIDX}
	dir := filepath.Join(root, "toy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"} {
		data := []byte("contents of " + name)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		spec.Files = append(spec.Files, datasets.File{Name: name, SHA256: sha(data), URL: "http://127.0.0.1:1/" + name})
	}
	return spec
}

// TestDownloadFindsPackagedCopy: with no dataset.source, the download stage
// takes a dataset from where a system package installs it (Debian's
// dataset-fashion-mnist: /usr/share/datasets/fashion-mnist), a temp dir
// standing in for /usr/share/datasets, after verifying every file; a
// missing or corrupt file leaves it to the official URL (here unreachable).
func TestDownloadFindsPackagedCopy(t *testing.T) {
	root := t.TempDir()
	old := packagedRoots
	packagedRoots = []string{filepath.Join(root, "nothing-here"), root}
	t.Cleanup(func() { packagedRoots = old })
	spec := packagedSpec(t, root)
	var logs bytes.Buffer
	cfg, err := ParseConfig([]byte("root: " + t.TempDir() + "\ndataset: {name: mnist}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rc := &RunContext{Config: cfg, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := context.Background()

	got, err := fetchSource(ctx, rc, spec)
	if err != nil || got != filepath.Join(root, "toy") {
		t.Fatalf("fetchSource = %q, %v; want the packaged folder %s", got, err, filepath.Join(root, "toy"))
	}
	if !strings.Contains(logs.String(), "system package") {
		t.Errorf("no log line says the packaged copy was used: %s", logs.String())
	}

	// A corrupt file: named in a warning, and not used.
	bad := filepath.Join(root, "toy", spec.Files[1].Name)
	if err := os.WriteFile(bad, []byte("corrupt"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	if dir := packagedSource(spec, rc.Log); dir != "" {
		t.Errorf("packagedSource with a corrupt file = %q, want none", dir)
	}
	if !strings.Contains(logs.String(), "does not verify") || !strings.Contains(logs.String(), spec.Files[1].Name) {
		t.Errorf("no warning naming the corrupt file: %s", logs.String())
	}
	// A missing file: not used either.
	os.Remove(bad)
	if dir := packagedSource(spec, rc.Log); dir != "" {
		t.Errorf("packagedSource with a file missing = %q, want none", dir)
	}
	if _, err := fetchSource(ctx, rc, spec); err == nil {
		t.Error("fetchSource went on without the packaged copy and without the network")
	}
}

// TestDownloadFindsDebianFashionMNIST checks the real package where it is
// installed: the registry's Fashion-MNIST checksums accept Debian's files.
func TestDownloadFindsDebianFashionMNIST(t *testing.T) {
	dir := filepath.Join(packagedRoots[0], "fashion-mnist")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s absent (apt install dataset-fashion-mnist to run this check)", dir)
	}
	spec, err := datasets.Lookup("fashion-mnist")
	if err != nil {
		t.Fatal(err)
	}
	if got := packagedSource(spec, slog.Default()); got != dir {
		t.Errorf("packagedSource(fashion-mnist) = %q, want %s", got, dir)
	}
}
