package stages

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The faults in this file already held when issue 15 attacked igpt; these
// cases keep them held. The others are TestReliabilityHeld_* next to the
// code they exercise (docs/reliability.md, "Held before").

// smallTmpfs mounts a tmpfs of size bytes at a new folder in the test's
// temporary folder and unmounts it when the test ends. It skips the test,
// saying why, when it cannot (not root, or mount refused).
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		t.Skipf("disk full is simulated with a small tmpfs, and mounting one needs root: running as uid %d", uid)
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a %d-byte tmpfs at %s (a container without CAP_SYS_ADMIN?): %v: %s", size, dir, err, bytes.TrimSpace(out))
	}
	// Cleanups run last-in first-out: this unmounts before TempDir removes.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillTo writes a filler file in dir until the file system is full, then
// shrinks it so that about free bytes are left.
func fillTo(t *testing.T, dir string, free int64) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	var n int64
	for {
		k, err := f.Write(block)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(max(n-free, 0)); err != nil {
		t.Fatal(err)
	}
}

// TestReliabilityHeld_DiskFull runs download on a root in a 2 MiB tmpfs:
// a forced rerun that fills the disk fails naming the file it was writing
// and leaves the finished output and its manifest as they were; a first run
// that fills it writes no manifest.
func TestReliabilityHeld_DiskFull(t *testing.T) {
	root := smallTmpfs(t, 2<<20)
	yaml := func(src string) string {
		return fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\n", root, src)
	}
	src := folderArchive(t, 64, nil) // 24 PNGs, about 300 KB of shards
	st, err := runDownload(t, yaml(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{ManifestName: must(os.ReadFile(filepath.Join(st.Dir, ManifestName)))}
	var size int64
	for _, f := range st.Manifest.Files {
		want[f.Name] = must(os.ReadFile(st.Manifest.Path(f.Name)))
		size += int64(len(want[f.Name]))
	}
	fillTo(t, root, size/3)

	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s on a full disk succeeded", what)
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		if !strings.Contains(first, "no space left on device") || !strings.Contains(first, root) {
			t.Fatalf("%s on a full disk: the first line does not name the file and the cause: %v", what, err)
		}
		t.Logf("%s: %s", what, first)
		if strings.Contains(err.Error(), "panic") {
			t.Fatalf("%s on a full disk panicked: %v", what, err)
		}
	}

	// A forced rerun: fails; the finished output is intact and still done.
	st2, err := runDownload(t, yaml(src), Options{Force: true})
	check("forced rerun", err)
	if !st2.Done() {
		t.Fatal("the finished download is no longer done after a failed rerun")
	}
	for name, b := range want {
		if got, err := os.ReadFile(filepath.Join(st.Dir, name)); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s changed or lost after a failed rerun: %v", name, err)
		}
	}

	// A first run of another dataset: fails and writes no manifest.
	st3, err := runDownload(t, yaml(folderArchive(t, 65, nil)), Options{})
	check("first run", err)
	if st3.Dir == st.Dir {
		t.Fatal("the second dataset has the first one's stage folder")
	}
	if st3.Done() {
		t.Fatal("a download that ran out of disk is done")
	}
	if m, _ := filepath.Glob(filepath.Join(st3.Dir+"*", ManifestName)); len(m) > 0 {
		t.Fatalf("a download that ran out of disk wrote %v", m)
	}
}
