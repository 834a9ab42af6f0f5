package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
)

func statusOf(t *testing.T, cfg *Config) string {
	t.Helper()
	p, err := NewPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	p.Status(context.Background(), &b)
	return b.String()
}

// TestStatusSaysRootMissing: --root /tmp/nowhere listed every stage "not
// run" without saying the root does not exist.
func TestStatusSaysRootMissing(t *testing.T) {
	cfg := testConfig(t)
	cfg.Root = filepath.Join(t.TempDir(), "nowhere")
	if got := statusOf(t, cfg); !strings.HasPrefix(got, "root "+cfg.Root+" does not exist") {
		t.Errorf("status of a missing root:\n%s", got)
	}
	os.MkdirAll(cfg.Root, 0o755)
	if got := statusOf(t, cfg); strings.Contains(got, "does not exist") {
		t.Errorf("status of an existing root says it is missing:\n%s", got)
	}
}

// TestStatusShowsRunningStage: a stage whose lock is held shows as running,
// with the holder and its step from metrics.jsonl (it showed "not run").
func TestStatusShowsRunningStage(t *testing.T) {
	cfg := testConfig(t)
	cfg.Train.Steps = 600
	p, err := NewPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := p.Step("train")
	host, _ := os.Hostname()
	lock, _ := json.Marshal(storage.LockInfo{PID: os.Getpid(), Host: host, Time: time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC), Token: "t"})
	os.MkdirAll(st.Dir, 0o755)
	os.WriteFile(lockPath(st.Dir), lock, 0o644)
	os.WriteFile(filepath.Join(st.Dir, MetricsFile), []byte("{\"step\":1}\n{\"step\":205,\"loss\":1}\n"), 0o644)
	want := fmt.Sprintf("train            running (pid %d on %s since 2026-12-07T11:00:00Z, step 205 of 600)", os.Getpid(), host)
	if got := statusOf(t, cfg); !strings.Contains(got, want) {
		t.Errorf("status of a running train stage:\n%s\nwant a line %q", got, want)
	}
	// Its holder gone: interrupted, not running.
	lock, _ = json.Marshal(storage.LockInfo{PID: 1 << 30, Host: host, Time: time.Now(), Token: "t"})
	os.WriteFile(lockPath(st.Dir), lock, 0o644)
	if got := statusOf(t, cfg); !strings.Contains(got, "train            interrupted (pid 1073741824") {
		t.Errorf("status of a train stage whose holder died:\n%s", got)
	}
}

// TestStatusNamesOtherSource: after a run with --source, status without it
// says where the finished stages are (the source is in the download key);
// a download of another dataset is not named.
func TestStatusNamesOtherSource(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	write := func(c *Config) {
		p, err := NewPlan(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := p.Step("download")
		params, _ := canonicalJSON(st.Params)
		if err := writeManifest(ctx, &Manifest{Stage: "download", Version: st.Stage.Version(), Key: st.Key, Config: params, Dir: st.Dir}); err != nil {
			t.Fatal(err)
		}
	}
	other := *cfg
	other.Dataset.Source = "/data/cifar-10-binary.tar.gz"
	write(&other)
	otherSet := *cfg
	otherSet.Dataset.Name, otherSet.Dataset.Source = "mnist", "/data/mnist"
	write(&otherSet)
	got := statusOf(t, cfg)
	if !strings.Contains(got, "is done from dataset.source /data/cifar-10-binary.tar.gz: igpt status "+cfg.Path+" --source=/data/cifar-10-binary.tar.gz shows") {
		t.Errorf("status without --source after a run with it:\n%s", got)
	}
	if strings.Contains(got, "/data/mnist") {
		t.Errorf("status names a download of another dataset:\n%s", got)
	}
	// With the same --source, nothing to say: the stage is done.
	if got := statusOf(t, &other); strings.Contains(got, "dataset.source") || !strings.Contains(got, "download         done") {
		t.Errorf("status with the run's --source:\n%s", got)
	}
}

// TestSampleRefusesOtherStageFolder: igpt sample given a palette folder
// says what it is and what to give ("has no token input" before).
func TestSampleRefusesOtherStageFolder(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "palette", "3e00996f9af9")
	if err := writeManifest(ctx, &Manifest{Stage: "palette", Key: "3e00996f9af9", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	_, err := SampleGrid(ctx, dir, 4, model.SampleOptions{Temperature: 1}, 2)
	if err == nil || err.Error() != "sample: "+dir+" is a palette stage folder; give a train stage folder (<root>/train/<key>; igpt status CONFIG lists its key)" {
		t.Errorf("sample of a palette folder: %v", err)
	}
}
