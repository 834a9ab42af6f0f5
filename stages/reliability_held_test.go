package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// stageFiles reads, for every done stage folder under root, the bytes of
// each file its manifest lists, keyed "stage/key/name". A listed file that
// is missing fails the test: a stage must not be done while incomplete.
func stageFiles(t *testing.T, root string, stages ...string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, stage := range stages {
		dirs, _ := filepath.Glob(filepath.Join(root, stage, "*"))
		for _, dir := range dirs {
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || filepath.Ext(dir) != "" {
				continue // <key>.lock, <key>.attempt, <key>.old
			}
			m, err := ReadManifest(context.Background(), dir)
			if errors.Is(err, fs.ErrNotExist) {
				continue // not done
			}
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			for _, f := range m.Files {
				b, err := os.ReadFile(m.Path(f.Name))
				if err != nil {
					t.Fatalf("stage %s is done but %v", stage, err)
				}
				out[stage+"/"+filepath.Base(dir)+"/"+f.Name] = b
			}
		}
	}
	return out
}

// TestReliabilityHeld_KillNineDownloadQuantize kills `igpt run --until=quantize`
// with SIGKILL at random moments, up to 6 times, checking after each kill
// that every stage marked done lists only files byte-identical to a clean
// run's; then runs it to the end and compares every file of download,
// palette and quantize byte for byte with the clean run. (Train:
// TestReliabilityHeld_TrainKillNineBitIdentical.)
func TestReliabilityHeld_KillNineDownloadQuantize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and spawns processes")
	}
	bin := buildIgpt(t)
	src := folderArchive(t, 16, nil)
	stages := []string{"download", "palette", "quantize"}
	run := func(root string) *exec.Cmd {
		cfg := filepath.Join(root, "exp.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\npalette: {k: 16}\nquantize: {val_fraction: 0.25, shards: {train: 3}}\n", root, src)), 0o644)
		cmd := exec.Command(bin, "run", cfg, "--until=quantize", "--log_level=warn")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd
	}
	finish := func(root string) {
		cmd := run(root)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("igpt run: %v\n%s", err, cmd.Stdout)
		}
	}

	// Two clean runs: the first pays for cold caches and is often much
	// slower than the runs that follow, so the kills are timed by the
	// faster one (else most kills land after a warm run has ended); the
	// two must also agree byte for byte.
	var want map[string][]byte
	clean := time.Duration(math.MaxInt64)
	for range 2 {
		refRoot := t.TempDir()
		start := time.Now()
		finish(refRoot)
		clean = min(clean, time.Since(start))
		got := stageFiles(t, refRoot, stages...)
		if len(got) == 0 {
			t.Fatal("the clean run wrote nothing")
		}
		if want != nil && !maps.EqualFunc(got, want, bytes.Equal) {
			t.Fatal("two clean runs wrote different files")
		}
		want = got
	}

	// Kill i lands at a random moment of the i-th sixth of a clean run's
	// time, so the kills spread over download, palette and quantize; each
	// in a fresh root, which is then resumed to the end.
	landed := 0
	for i := 0; i < 6; i++ {
		root := t.TempDir()
		cmd := run(root)
		at := time.Duration(int64(i)*int64(clean)/6 + rand.Int64N(int64(clean)/6))
		time.Sleep(at)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
			landed++
		} else if err != nil {
			t.Fatalf("kill %d: igpt run failed before the kill: %v\n%s", i, err, cmd.Stdout)
		}
		got := stageFiles(t, root, stages...)
		t.Logf("kill %d at %v: %d of %d files done", i, at.Round(time.Millisecond), len(got), len(want))
		for name, b := range got {
			if w, ok := want[name]; !ok || !bytes.Equal(b, w) {
				t.Fatalf("kill %d: %s is done but differs from the clean run's (in the clean run: %v)", i, name, ok)
			}
		}
		finish(root)
		got = stageFiles(t, root, stages...)
		for name, b := range want {
			if !bytes.Equal(got[name], b) {
				t.Errorf("kill %d: after the rerun %s differs from the clean run's", i, name)
			}
		}
		if len(got) != len(want) {
			t.Errorf("kill %d: %d files after the rerun, %d in the clean run", i, len(got), len(want))
		}
	}
	if landed < 3 {
		t.Fatalf("only %d of 6 runs were killed before they ended", landed)
	}
}
