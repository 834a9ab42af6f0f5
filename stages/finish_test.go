package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/pipelines"
)

// TestFinishSpecConfigRoundTrip: the finish step re-creates the run's
// config from the YAML the launcher puts in the job: for every shipped
// config the same Config, so the same stage keys.
func TestFinishSpecConfigRoundTrip(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(), "configs", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs: %v", err)
	}
	for _, f := range files {
		cfg, err := LoadConfig(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		rc := &RunContext{Config: cfg, Key: "000000000000", Dir: "/x", Runner: "prism"}
		spec, err := newFinishSpec(downloadStage{}, rc, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := spec.config()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, cfg) {
			t.Errorf("%s: the finish step's config differs:\n%+v\nwant\n%+v", f, got, cfg)
		}
	}
}

// jobTestYAML is a three-stage palette config over a small image folder.
func jobTestYAML(t *testing.T, root, src string) string {
	t.Helper()
	return fmt.Sprintf("root: %s\ndataset: {name: folder, source: %s}\ndownload: {shard_mib: 1}\npalette: {k: 8}\nquantize: {shards: {train: 3, test: 2}}\n", root, src)
}

// planOf plans a YAML config.
func planOf(t *testing.T, yaml string) *Plan {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Path = "test.yaml"
	p, err := NewPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runJobDirectly runs a planned stage's Run into its stage folder, as a job
// launched by anything but igpt would: no lock, no attempt folder, no
// publish. It returns Run's error.
func runJobDirectly(t *testing.T, p *Plan, name string, rc func(*RunContext)) (*RunContext, error) {
	t.Helper()
	st, err := p.Step(name)
	if err != nil {
		t.Fatal(err)
	}
	inputs, err := p.upstreamInputs(st, Options{}, true)
	if err != nil {
		t.Fatal(err)
	}
	c := &RunContext{Config: p.Config, Key: st.Key, Dir: st.Dir, Final: st.Dir, Inputs: inputs, Runner: "prism",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Started: time.Now()}
	if rc != nil {
		rc(c)
	}
	_, err = st.Stage.Run(context.Background(), c)
	return c, err
}

// timing meta keys, which differ between any two runs.
var timingMeta = map[string]bool{"histogram_s": true, "kmeans_s": true, "graph_bytes": true}

// comparableManifest is what two runs of the same stage and config must
// agree on: everything but times, job, folder and timing meta.
func comparableManifest(t *testing.T, m *Manifest) string {
	t.Helper()
	c := *m
	c.Started, c.Finished, c.JobID, c.Dir = time.Time{}, time.Time{}, "", ""
	c.Meta = map[string]any{}
	for k, v := range m.Meta {
		if !timingMeta[k] {
			c.Meta[k] = v
		}
	}
	b, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// manifestsUnder lists every _MANIFEST.json under a local root.
func manifestsUnder(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == ManifestName {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestJobWritesManifest runs the pipelines of download, palette and
// quantize directly on prism, with nothing of the planner around them (no
// lock, no attempt folder, no publish), as a job launched by a flex
// template or a scheduler runs: each leaves a complete _MANIFEST.json in its
// stage folder, equal to what igpt run writes for the same config (files
// with records and bytes, meta, config, inputs), and the next stage runs
// from it.
func TestJobWritesManifest(t *testing.T) {
	src := folderArchive(t, 8, nil)
	ctx := context.Background()
	root := t.TempDir()
	direct := map[string]*Manifest{}
	for _, name := range []string{"download", "palette", "quantize"} {
		p := planOf(t, jobTestYAML(t, root, src)) // upstream manifests as the job left them
		rc, err := runJobDirectly(t, p, name, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		st, _ := p.Step(name)
		m, err := ReadManifest(ctx, st.Dir)
		if err != nil {
			t.Fatalf("%s: the job left no manifest: %v", name, err)
		}
		if err := m.checkFiles(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		direct[name] = m
		if n, ok := m.Meta["graph_bytes"].(float64); !ok || n <= 0 || int(n) != rc.GraphBytes {
			t.Errorf("%s: meta.graph_bytes %v, the job graph measured %d bytes", name, m.Meta["graph_bytes"], rc.GraphBytes)
		}
		if m.Runner != "prism" || m.Started.IsZero() || m.Finished.Before(m.Started) || m.CodeVersion == "" {
			t.Errorf("%s: runner %q, started %v, finished %v, code %q", name, m.Runner, m.Started, m.Finished, m.CodeVersion)
		}
	}
	viaRun := planOf(t, jobTestYAML(t, t.TempDir(), src))
	if err := viaRun.RunUntil(ctx, "quantize", Options{}); err != nil {
		t.Fatal(err)
	}
	for name, m := range direct {
		want, _ := viaRun.Step(name)
		if got, w := comparableManifest(t, m), comparableManifest(t, want.Manifest); got != w {
			t.Errorf("%s: the job's manifest:\n%s\nigpt run's:\n%s", name, got, w)
		}
	}
}

// TestFinishAfterAllWrites: the finish step runs once every shard is
// written: the quantize job's manifest lists exactly the shards in its
// folder (the empty ones its stats step fills in included), checkFiles
// passes, and the manifest was written after the last of them.
func TestFinishAfterAllWrites(t *testing.T) {
	p := planOf(t, jobTestYAML(t, t.TempDir(), folderArchive(t, 8, nil)))
	ctx := context.Background()
	if err := p.RunUntil(ctx, "palette", Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := runJobDirectly(t, p, "quantize", nil); err != nil {
		t.Fatal(err)
	}
	st, _ := p.Step("quantize")
	m, err := ReadManifest(ctx, st.Dir)
	if err != nil {
		t.Fatalf("no manifest: %v", err)
	}
	if err := m.checkFiles(ctx); err != nil {
		t.Fatal(err)
	}
	onDisk, err := filepath.Glob(filepath.Join(st.Dir, "*-of-*.msgpack"))
	if err != nil {
		t.Fatal(err)
	}
	var disk, listed []string
	for _, f := range onDisk {
		disk = append(disk, filepath.Base(f))
	}
	for _, f := range m.Files {
		listed = append(listed, f.Name)
	}
	sort.Strings(disk)
	sort.Strings(listed)
	// train 3, test 2 and the val split carved from train (one shard).
	if len(disk) != 6 || !reflect.DeepEqual(disk, listed) {
		t.Fatalf("shards on disk %v, manifest lists %v", disk, listed)
	}
	mi, err := os.Stat(filepath.Join(st.Dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(onDisk, filepath.Join(st.Dir, pipelines.StatsName)) {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.ModTime().After(mi.ModTime()) {
			t.Errorf("%s was written after the manifest (%v > %v)", filepath.Base(f), fi.ModTime(), mi.ModTime())
		}
	}
}

// TestFailedJobLeavesNoManifest: a job that fails leaves no manifest
// anywhere, whether a worker fails mid-way (one unit's bad image, after the
// other units' shards are written) or the finish step itself fails after
// computing the output; and a failing --force rerun keeps the finished
// output and its manifest.
func TestFailedJobLeavesNoManifest(t *testing.T) {
	ctx := context.Background()
	t.Run("worker", func(t *testing.T) {
		root := t.TempDir()
		bad := folderArchive(t, 8, map[string][]byte{"test/emu/zz-bad.png": []byte("not a png")})
		p := planOf(t, jobTestYAML(t, root, bad))
		_, err := runJobDirectly(t, p, "download", nil)
		if err == nil || !strings.Contains(err.Error(), "zz-bad.png") {
			t.Fatalf("the failing job returned %v", err)
		}
		if ms := manifestsUnder(t, root); len(ms) > 0 {
			t.Fatalf("a failed job left manifests: %v", ms)
		}
		if err := p.RunOne(ctx, "download", Options{}); err == nil {
			t.Fatal("igpt stage download succeeded")
		}
		if ms := manifestsUnder(t, root); len(ms) > 0 {
			t.Fatalf("a failed job left manifests: %v", ms)
		}
	})
	t.Run("finish", func(t *testing.T) {
		root := t.TempDir()
		p := planOf(t, jobTestYAML(t, root, folderArchive(t, 8, nil)))
		finishFault = func(stage string) error { return fmt.Errorf("injected: the %s finish step's worker died", stage) }
		t.Cleanup(func() { finishFault = nil })
		_, err := runJobDirectly(t, p, "download", nil)
		if err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("the failing job returned %v", err)
		}
		if ms := manifestsUnder(t, root); len(ms) > 0 {
			t.Fatalf("a job whose finish step failed left manifests: %v", ms)
		}
		st, _ := p.Step("download")
		if err := p.RunOne(ctx, "download", Options{}); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("igpt stage download: %v", err)
		}
		if ms := manifestsUnder(t, root); len(ms) > 0 {
			t.Fatalf("a job whose finish step failed left manifests: %v", ms)
		}
		// A finished output survives a failing --force.
		finishFault = nil
		if err := p.RunOne(ctx, "download", Options{}); err != nil {
			t.Fatal(err)
		}
		first := st.Manifest
		finishFault = func(stage string) error { return errors.New("injected again") }
		if err := p.RunOne(ctx, "download", Options{Force: true}); err == nil {
			t.Fatal("the forced rerun succeeded")
		}
		m, err := ReadManifest(ctx, st.Dir)
		if err != nil || !m.Finished.Equal(first.Finished) {
			t.Fatalf("the finished output's manifest after a failed --force: %v, %v", m, err)
		}
		if ms := manifestsUnder(t, root); len(ms) != 1 {
			t.Fatalf("manifests after the failed --force: %v", ms)
		}
	})
}

// TestDetachedJobFinishesStageFolder: with no launcher waiting (--async, a
// flex template launch) the job leaves a finished stage folder on its own:
// with no finished output it writes the stage folder itself; with one
// (--force) it writes the attempt folder and its finish step swaps it in,
// under the stage lock, which it releases.
func TestDetachedJobFinishesStageFolder(t *testing.T) {
	root := t.TempDir()
	p := planOf(t, jobTestYAML(t, root, folderArchive(t, 8, nil)))
	ctx := context.Background()
	st, _ := p.Step("download")
	if _, err := runJobDirectly(t, p, "download", func(rc *RunContext) { rc.Detached = true }); err != nil {
		t.Fatal(err)
	}
	first, err := ReadManifest(ctx, st.Dir)
	if err != nil {
		t.Fatalf("the detached job left no manifest in the stage folder: %v", err)
	}
	started := time.Now().Add(time.Hour) // tells the rerun's manifest apart
	rc, err := runJobDirectly(t, p, "download", func(rc *RunContext) {
		rc.Detached, rc.Dir, rc.Started = true, attemptDir(st.Dir), started
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadManifest(ctx, st.Dir)
	if err != nil || !m.Started.Equal(started.UTC()) {
		t.Fatalf("the forced detached job's output was not swapped in: %v (started %v, first %v)", err, m.Started, first.Started)
	}
	for _, left := range []string{rc.Dir, lockPath(st.Dir), oldDir(st.Dir)} {
		if _, err := os.Stat(left); !os.IsNotExist(err) {
			t.Errorf("%s is left after the swap (%v)", left, err)
		}
	}
	if err := m.checkFiles(ctx); err != nil {
		t.Fatal(err)
	}

	// Another run holding the stage lock past the wait: the job fails as
	// one that never finished, and the finished output stays.
	held, err := storage.TryLock(ctx, lockPath(st.Dir), storage.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	saved := swapLockTimeout
	swapLockTimeout = 100 * time.Millisecond
	t.Cleanup(func() { swapLockTimeout = saved })
	_, err = runJobDirectly(t, p, "download", func(rc *RunContext) {
		rc.Detached, rc.Dir, rc.Started = true, attemptDir(st.Dir), started.Add(time.Hour)
	})
	if err == nil || !strings.Contains(err.Error(), "stage lock stayed held") {
		t.Fatalf("the forced detached job with the lock held: %v", err)
	}
	if after, err := ReadManifest(ctx, st.Dir); err != nil || !after.Started.Equal(m.Started) {
		t.Fatalf("the finished output changed: %v, %v", after, err)
	}
	if ms := manifestsUnder(t, root); len(ms) != 1 {
		t.Errorf("manifests after the failed swap: %v", ms)
	}
}
