package stages

// The reliability suite (docs/reliability.md lists every case): each
// TestReliability<N>_… turns defect N of issue 15 into a test that asserts
// an error naming the file, key or record, no panic, no unbounded
// allocation, and no finished output lost or marked done when incomplete.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/model"
)

func init() {
	// Waiters poll often in tests; staleness stays long so a slow
	// machine never makes a live lock look stale.
	LockTuning = storage.LockOptions{Heartbeat: 50 * time.Millisecond, StaleAfter: time.Minute, Poll: 5 * time.Millisecond}
}

// slowStage writes n files, one at a time with a pause, into its folder
// and counts its runs and how many run at once.
type slowStage struct {
	name     string
	ups      []string
	n        int
	pause    time.Duration
	resume   bool
	fail     *atomic.Bool
	runs     *atomic.Int32
	inFlight *atomic.Int32
	maxIn    *atomic.Int32
	skip     string // a listed file not written
	mark     string // a file created when Run starts (a progress marker)
}

func newSlow(name string, ups ...string) slowStage {
	return slowStage{name: name, ups: ups, n: 4, pause: 2 * time.Millisecond, fail: new(atomic.Bool),
		runs: new(atomic.Int32), inFlight: new(atomic.Int32), maxIn: new(atomic.Int32)}
}

func (s slowStage) Name() string              { return s.name }
func (s slowStage) Version() int              { return 1 }
func (s slowStage) Upstream(*Config) []string { return s.ups }
func (s slowStage) Params(c *Config) any      { return c.Dataset }
func (s slowStage) Resumable() bool           { return s.resume }
func (s slowStage) Run(ctx context.Context, rc *RunContext) (*Output, error) {
	s.runs.Add(1)
	in := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxIn.Load()
		if in <= m || s.maxIn.CompareAndSwap(m, in) {
			break
		}
	}
	if s.mark != "" {
		if err := os.WriteFile(s.mark, nil, 0o644); err != nil {
			return nil, err
		}
	}
	out := &Output{}
	for i := 0; i < s.n; i++ {
		name := fmt.Sprintf("part-%d.txt", i)
		if s.fail.Load() && i == s.n/2 {
			return nil, errors.New("injected failure half way")
		}
		time.Sleep(s.pause)
		if name != s.skip {
			if err := storage.WriteFile(ctx, storage.Join(rc.Dir, name), []byte(rc.Key)); err != nil {
				return nil, err
			}
		}
		out.Files = append(out.Files, FileInfo{Name: name, Split: "train", Records: 1, Bytes: int64(len(rc.Key))})
	}
	return out, nil
}

func slowChain() (map[string]Stage, slowStage, slowStage) {
	a, b := newSlow("a"), newSlow("b", "a")
	return map[string]Stage{"a": a, "b": b}, a, b
}

// assertDoneComplete checks that every done step's manifest lists files
// that exist.
func assertDoneComplete(t *testing.T, cfg *Config, reg map[string]Stage) {
	t.Helper()
	p, err := newPlan(context.Background(), cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range p.Steps {
		if !st.Done() {
			continue
		}
		for _, f := range st.Manifest.Files {
			if _, err := os.Stat(st.Manifest.Path(f.Name)); err != nil {
				t.Errorf("stage %s is done but %v", st.Stage.Name(), err)
			}
		}
	}
}

// TestReliability1_ConcurrentRuns runs the same config from several
// goroutines at once, each with its own plan (as separate `igpt run`
// processes would). In every interleaving: all succeed, each stage runs
// once in all, never two runs of one stage at a time, and every manifest
// lists only files that exist.
func TestReliability1_ConcurrentRuns(t *testing.T) {
	for trial := 0; trial < 10; trial++ {
		reg, a, b := slowChain()
		cfg := testConfig(t)
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := newPlan(context.Background(), cfg, reg)
				if err == nil {
					err = p.RunAll(context.Background(), Options{})
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("trial %d: run %d: %v", trial, i, err)
			}
		}
		for _, s := range []slowStage{a, b} {
			if s.runs.Load() != 1 || s.maxIn.Load() != 1 {
				t.Fatalf("trial %d: stage %s ran %d times, %d at once", trial, s.name, s.runs.Load(), s.maxIn.Load())
			}
		}
		assertDoneComplete(t, cfg, reg)
	}
}

// TestReliability1_ConcurrentForce: forced reruns racing each other and a
// plain run never run one stage twice at a time, and leave it done and
// complete.
func TestReliability1_ConcurrentForce(t *testing.T) {
	reg, a, _ := slowChain()
	cfg := testConfig(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := newPlan(context.Background(), cfg, reg)
			if err == nil {
				err = p.RunOne(context.Background(), "a", Options{Force: i%2 == 0})
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if a.maxIn.Load() != 1 {
		t.Fatalf("%d runs of stage a at once", a.maxIn.Load())
	}
	assertDoneComplete(t, cfg, reg)
}

// TestReliability1_LockHeldNamesHolder: a live lock makes a run wait, and
// giving up names the holder.
func TestReliability1_LockHeldNamesHolder(t *testing.T) {
	reg, _, _ := slowChain()
	cfg := testConfig(t)
	p, _ := newPlan(context.Background(), cfg, reg)
	dir := p.byName["a"].Dir
	ctx := context.Background()
	held, err := storage.TryLock(ctx, lockPath(dir), LockTuning)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = p.RunOne(tctx, "a", Options{})
	if err == nil || !strings.Contains(err.Error(), lockPath(dir)) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("run against a held lock: %v", err)
	}
	if p.byName["a"].Done() {
		t.Fatal("stage done while another run held its lock")
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot start a process: %v", err)
	}
	return cmd.Process.Pid
}

// TestReliability1_StaleLockRecovered: a lock left by a dead process on
// this host, or one not refreshed for StaleAfter, is taken over.
func TestReliability1_StaleLockRecovered(t *testing.T) {
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name string
		info string
		age  time.Duration
	}{
		{"dead pid", fmt.Sprintf(`{"pid":%d,"host":%q,"time":"2020-01-01T00:00:00Z","token":"dead"}`, deadPID(t), host), 0},
		{"old, other host", `{"pid":1,"host":"elsewhere","time":"2020-01-01T00:00:00Z","token":"old"}`, 2 * time.Minute},
		{"garbled and old", `{"pi`, 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, a, _ := slowChain()
			cfg := testConfig(t)
			p, _ := newPlan(context.Background(), cfg, reg)
			lp := lockPath(p.byName["a"].Dir)
			os.MkdirAll(filepath.Dir(lp), 0o755)
			os.WriteFile(lp, []byte(tc.info), 0o644)
			old := time.Now().Add(-tc.age)
			os.Chtimes(lp, old, old)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.RunAll(ctx, Options{}); err != nil {
				t.Fatal(err)
			}
			if a.runs.Load() != 1 {
				t.Fatalf("stage a ran %d times", a.runs.Load())
			}
			if _, err := os.Stat(lp); !os.IsNotExist(err) {
				t.Fatalf("lock not released: %v", err)
			}
		})
	}
	// A live lock of another host, fresh, is not stale.
	t.Run("fresh, other host", func(t *testing.T) {
		lp := filepath.Join(t.TempDir(), "x.lock")
		os.WriteFile(lp, []byte(`{"pid":1,"host":"elsewhere","time":"2020-01-01T00:00:00Z","token":"live"}`), 0o644)
		_, err := storage.TryLock(context.Background(), lp, LockTuning)
		if !errors.Is(err, storage.ErrLockHeld) || !strings.Contains(err.Error(), "pid 1 on elsewhere") {
			t.Fatalf("TryLock on a fresh lock: %v", err)
		}
	})
}

// TestReliability1_GCSLock: the lock object is created with the
// precondition DoesNotExist, so a second taker fails; a stale one is
// taken over by a generation-conditioned delete.
func TestReliability1_GCSLock(t *testing.T) {
	testutil.FakeGCS(t, "bkt")
	ctx := context.Background()
	p := "gs://bkt/root/a/0123456789ab.lock"
	l1, err := storage.TryLock(ctx, p, LockTuning)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.TryLock(ctx, p, LockTuning); !errors.Is(err, storage.ErrLockHeld) {
		t.Fatalf("second TryLock of a held GCS lock: %v", err)
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// l2 is never released and never refreshed (an hour's heartbeat: with
	// LockTuning's 50 ms, a refresh landing within the taker's 10 ms
	// StaleAfter made the takeover fail under load): with a short
	// StaleAfter it is stale at once for another taker, who takes it over;
	// l2 then knows it lost it.
	still := LockTuning
	still.Heartbeat = time.Hour
	l2, err := storage.TryLock(ctx, p, still)
	if err != nil {
		t.Fatalf("TryLock after release: %v", err)
	}
	t.Cleanup(func() { l2.Release(ctx) }) // stops its heartbeat even when the test fails
	time.Sleep(20 * time.Millisecond)
	short := LockTuning
	short.StaleAfter = 10 * time.Millisecond
	short.Heartbeat = time.Hour
	l3, err := storage.TryLock(ctx, p, short)
	if err != nil {
		t.Fatalf("take over a stale GCS lock: %v", err)
	}
	if err := l2.Check(ctx); !errors.Is(err, storage.ErrLockLost) {
		t.Fatalf("the old holder's Check after a takeover: %v", err)
	}
	if err := l3.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReliability1_ManifestListsMissingFile: a stage that lists a file it
// did not write is not marked done.
func TestReliability1_ManifestListsMissingFile(t *testing.T) {
	a := newSlow("a")
	a.skip = "part-2.txt"
	reg := map[string]Stage{"a": a}
	cfg := testConfig(t)
	p, _ := newPlan(context.Background(), cfg, reg)
	err := p.RunAll(context.Background(), Options{})
	if err == nil || !strings.Contains(err.Error(), "part-2.txt") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("stage listing an unwritten file: %v", err)
	}
	if p.byName["a"].Done() {
		t.Fatal("marked done")
	}
	if _, err := os.Stat(filepath.Join(p.byName["a"].Dir, ManifestName)); !os.IsNotExist(err) {
		t.Fatalf("manifest written: %v", err)
	}
}

// TestReliability2_ForceFailureKeepsOutput: a --force rerun that fails
// leaves the finished output, manifest and files, in place and done; for
// a resumable stage too.
func TestReliability2_ForceFailureKeepsOutput(t *testing.T) {
	for _, resume := range []bool{false, true} {
		t.Run(fmt.Sprintf("resumable=%v", resume), func(t *testing.T) {
			a := newSlow("a")
			a.resume = resume
			reg := map[string]Stage{"a": a}
			cfg := testConfig(t)
			ctx := context.Background()
			p, _ := newPlan(ctx, cfg, reg)
			if err := p.RunAll(ctx, Options{}); err != nil {
				t.Fatal(err)
			}
			dir := p.byName["a"].Dir
			before, _ := os.ReadFile(filepath.Join(dir, ManifestName))
			a.fail.Store(true)
			err := p.RunOne(ctx, "a", Options{Force: true})
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("failing forced rerun: %v", err)
			}
			after, _ := os.ReadFile(filepath.Join(dir, ManifestName))
			if len(before) == 0 || string(after) != string(before) {
				t.Fatal("the failed --force rerun changed or removed the finished manifest")
			}
			p2, _ := newPlan(ctx, cfg, reg)
			if !p2.byName["a"].Done() {
				t.Fatal("stage not done after a failed --force rerun")
			}
			assertDoneComplete(t, cfg, reg)
			// A successful forced rerun replaces it.
			a.fail.Store(false)
			if err := p2.RunOne(ctx, "a", Options{Force: true}); err != nil {
				t.Fatal(err)
			}
			if a.runs.Load() != 3 {
				t.Fatalf("%d runs", a.runs.Load())
			}
			assertDoneComplete(t, cfg, reg)
			if _, err := os.Stat(attemptDir(dir)); !os.IsNotExist(err) {
				t.Fatalf("attempt folder left after a successful swap: %v", err)
			}
		})
	}
}

// TestReliability2_InterruptedSwapCompleted: a run killed between moving
// the old output aside and moving the new one in leaves a finished
// attempt folder; the next run completes the swap instead of losing both.
func TestReliability2_InterruptedSwapCompleted(t *testing.T) {
	a := newSlow("a")
	reg := map[string]Stage{"a": a}
	cfg := testConfig(t)
	ctx := context.Background()
	p, _ := newPlan(ctx, cfg, reg)
	if err := p.RunAll(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	dir := p.byName["a"].Dir
	// Recreate the moment of the kill: a finished attempt, the old
	// output moved aside, no stage folder.
	if err := os.Rename(dir, attemptDir(dir)); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(oldDir(dir), 0o755)
	p2, _ := newPlan(ctx, cfg, reg)
	if err := p2.RunAll(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	if a.runs.Load() != 1 {
		t.Fatalf("stage reran (%d runs) instead of completing the swap", a.runs.Load())
	}
	for _, d := range []string{attemptDir(dir), oldDir(dir)} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("%s left: %v", d, err)
		}
	}
	assertDoneComplete(t, cfg, reg)
}

// TestReliability2_ForceOnGCSKeepsOutput: the same on gs://.
func TestReliability2_ForceOnGCSKeepsOutput(t *testing.T) {
	testutil.FakeGCS(t, "bkt")
	a := newSlow("a")
	reg := map[string]Stage{"a": a}
	cfg, err := ParseConfig([]byte("root: gs://bkt/r\ndataset: {name: cifar10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, _ := newPlan(ctx, cfg, reg)
	if err := p.RunAll(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	a.fail.Store(true)
	if err := p.RunOne(ctx, "a", Options{Force: true}); err == nil {
		t.Fatal("no error")
	}
	p2, err := newPlan(ctx, cfg, reg)
	if err != nil || !p2.byName["a"].Done() {
		t.Fatalf("not done after a failed --force on GCS: %v", err)
	}
	a.fail.Store(false)
	if err := p2.RunOne(ctx, "a", Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	m := p2.byName["a"].Manifest
	for _, f := range m.Files {
		if ok, err := storage.Exists(ctx, m.Path(f.Name)); !ok || err != nil {
			t.Fatalf("%s missing after the GCS swap: %v", f.Name, err)
		}
	}
	if files, _ := storage.List(ctx, attemptDir(m.Dir)); len(files) != 0 {
		t.Fatalf("attempt objects left: %v", files)
	}
	if ok, _ := storage.Exists(ctx, lockPath(m.Dir)); ok {
		t.Fatal("lock object left")
	}
}

// TestReliability3_KeepCheckpoints: keep_checkpoints below 1 is refused
// naming the key, and prune never deletes the checkpoint LATEST names or
// the newest, whatever it is given.
func TestReliability3_KeepCheckpoints(t *testing.T) {
	for _, k := range []string{"-1", "-100"} {
		assertConfigError(t, "train: {keep_checkpoints: "+k+"}", "train.keep_checkpoints is "+k)
	}
	for _, keep := range []int{-1, 0, 1} {
		dir := t.TempDir()
		for _, s := range []int{1, 2, 3} {
			p := filepath.Join(dir, CheckpointDir, ckptName(s), StateFile)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("{}"), 0o644)
		}
		if err := checkpointStore(dir, keep).Prune(context.Background(), 3); err != nil {
			t.Fatalf("keep %d: prune: %v", keep, err)
		}
		if _, err := os.Stat(filepath.Join(dir, CheckpointDir, ckptName(3))); err != nil {
			t.Fatalf("keep %d: prune deleted the newest checkpoint: %v", keep, err)
		}
		if _, err := os.Stat(filepath.Join(dir, CheckpointDir, ckptName(1))); !os.IsNotExist(err) {
			t.Fatalf("keep %d: prune kept an old checkpoint", keep)
		}
	}
	// A leftover folder newer than LATEST (a killed write) does not push
	// LATEST's checkpoint out.
	dir := t.TempDir()
	for _, s := range []int{2, 3, 9} {
		p := filepath.Join(dir, CheckpointDir, ckptName(s), StateFile)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("{}"), 0o644)
	}
	checkpointStore(dir, 1).Prune(context.Background(), 3)
	if _, err := os.Stat(filepath.Join(dir, CheckpointDir, ckptName(3))); err != nil {
		t.Fatalf("prune deleted LATEST's checkpoint beside a newer leftover: %v", err)
	}
}

// TestReliability9_ConfigMemoryLimits: sizes that would exhaust memory are
// refused at config time (or, for the model, before train allocates),
// naming the key.
func TestReliability9_ConfigMemoryLimits(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"quantize: {resize: [100000, 100000]}", "quantize.resize"},
		{"quantize: {resize: [1, 100000000]}", "quantize.resize"},
		{"sample: {scale: 100000}", "sample.scale"},
	} {
		assertConfigError(t, tc.yaml, tc.key)
	}
	defer func(f func() (float64, bool)) { machineMemory = f }(machineMemory)
	machineMemory = func() (float64, bool) { return 23e9, true }
	for _, tc := range []struct {
		train TrainParams
		key   string
	}{
		{TrainParams{Model: "nano", Batch: 100_000_000}, "train.batch 100000000"},
		{TrainParams{Model: "XL", Batch: 1}, "train.model XL"},
	} {
		mc, err := ModelConfig(tc.train, 1024, 512)
		if err != nil {
			t.Fatal(err)
		}
		err = checkTrainMemory(mc, tc.train)
		if err == nil || !strings.Contains(strings.SplitN(err.Error(), "\n", 2)[0], tc.key) {
			t.Errorf("%+v on 23 GB: %v, want it to name %s", tc.train, err, tc.key)
		}
	}
	// The train stage checks before it allocates the model.
	machineMemory = func() (float64, bool) { return 1e3, true }
	rc := tinyTrainContext(t)
	rc.Inputs = map[string]*Manifest{"quantize": fakeQuantize(t, 16, tokRec("a", 2, 2, 16, 1))}
	if _, err := (trainStage{}).Run(context.Background(), rc); err == nil || !strings.Contains(err.Error(), "train.batch 2") {
		t.Errorf("train on a 1 kB machine: %v", err)
	}
	machineMemory = func() (float64, bool) { return 23e9, true }
	// What fits is accepted: the shipped default on a 23 GB machine.
	mc, _ := ModelConfig(TrainParams{Model: "nano"}, 1024, 512)
	if err := checkTrainMemory(mc, TrainParams{Model: "nano", Batch: 8}); err != nil {
		t.Errorf("nano, batch 8 on 23 GB: %v", err)
	}
}

// TestReliability13_NaNConfig: NaN and Inf config values are refused
// naming their key, before anything is encoded or compared.
func TestReliability13_NaNConfig(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"train: {lr: .nan}", "train.lr"},
		{"train: {clip: .inf}", "train.clip"},
		{"train: {hflip: -.inf}", "train.hflip"},
		{"probe: {l2: [0.1, .nan]}", "probe.l2[1]"},
		{"quantize: {val_fraction: .nan}", "quantize.val_fraction"},
		{"sample: {top_p: .NaN}", "sample.top_p"},
	} {
		assertConfigError(t, tc.yaml, tc.key+" is ")
	}
}

// assertConfigError checks that a config with the line yaml is refused
// with an error starting with prefix (the key).
func assertConfigError(t *testing.T, yaml, prefix string) {
	t.Helper()
	_, err := ParseConfig([]byte("dataset: {name: cifar10}\n" + yaml + "\n"))
	if err == nil || !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("%s: %v, want an error starting with %q", yaml, err, prefix)
	}
}

// fakeQuantize writes recs as a one-shard quantize output whose palette
// has vocab colours, with its manifest read back as a stage would.
func fakeQuantize(t *testing.T, vocab int, recs ...records.Tokens) *Manifest {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "quantize", "0123456789ab")
	var buf bytes.Buffer
	w, err := records.NewWriter(&buf, records.KindTokens)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	name := "train-00000-of-00001.tokens"
	if err := storage.WriteFile(ctx, filepath.Join(dir, name), buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Stage: "quantize", Key: "0123456789ab", Dir: dir, Meta: map[string]any{"vocab": vocab},
		Files: []FileInfo{{Name: name, Split: "train", Records: int64(len(recs))}}}
	if err := writeManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m, err = ReadManifest(ctx, dir); err != nil {
		t.Fatal(err)
	}
	return m
}

func tinyTrainContext(t *testing.T) *RunContext {
	cfg, err := ParseConfig([]byte("dataset: {name: cifar10}\ntrain: {model: nano, layers: 1, d: 8, heads: 1, batch: 2, steps: 2, threads: 1, eval_records: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return &RunContext{Config: cfg, Key: "0123456789ab", Dir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}
}

func tokRec(key string, h, w, vocab int, fill uint16) records.Tokens {
	tok := make([]uint16, h*w)
	for i := range tok {
		tok[i] = fill
	}
	return records.Tokens{Key: key, H: h, W: w, Vocab: vocab, Tok: tok}
}

// TestReliability11_TokensRecords: a valid-CRC Tokens record that lies
// (token past its vocab, a vocab that is not the palette's, h·w that
// wraps) is refused naming the file and record, before training.
func TestReliability11_TokensRecords(t *testing.T) {
	wrap := tokRec("wrap", 2, 2, 16, 1)
	wrap.H, wrap.W = 1<<56+1, 256
	wrap.Tok = make([]uint16, 256)
	for _, tc := range []struct {
		name string
		recs []records.Tokens
		want []string
	}{
		{"token past vocab", []records.Tokens{tokRec("a", 2, 2, 16, 600)}, []string{"train-00000-of-00001.tokens", `"a"`, "token 600"}},
		{"vocab not the palette's", []records.Tokens{tokRec("b", 2, 2, 65535, 600)}, []string{"train-00000-of-00001.tokens", `"b"`, "vocab 65535", "16 colours"}},
		{"later record's vocab", []records.Tokens{tokRec("c", 2, 2, 16, 1), tokRec("d", 2, 2, 17, 1), tokRec("e", 2, 2, 16, 1)}, []string{"train-00000-of-00001.tokens", `"d"`, "vocab 17"}},
		{"h·w wraps", []records.Tokens{wrap}, []string{"train-00000-of-00001.tokens", `"wrap"`, "h×w"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			qm := fakeQuantize(t, 16, tc.recs...)
			rc := tinyTrainContext(t)
			rc.Inputs = map[string]*Manifest{"quantize": qm}
			_, err := trainStage{}.Run(context.Background(), rc)
			if err == nil {
				t.Fatal("trained on it")
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			for _, w := range tc.want {
				if !strings.Contains(first, w) {
					t.Errorf("error does not name %s: %v", w, err)
				}
			}
		})
	}
}

// TestReliability8_ResumeStateOutOfRange: a checkpoint whose state.json
// data position does not fit the data is refused naming the file, not a
// slice-bounds panic.
// checkpointedTrainer returns a tiny train stage's token input and run
// context with one checkpoint written, at step 1.
func checkpointedTrainer(t *testing.T) (*Manifest, *RunContext) {
	t.Helper()
	ctx := context.Background()
	qm := fakeQuantize(t, 16, tokRec("a", 2, 2, 16, 1), tokRec("b", 2, 2, 16, 2))
	rc := tinyTrainContext(t)
	tr, err := newTrainer(ctx, rc, qm)
	if err != nil {
		t.Fatal(err)
	}
	tr.step, tr.opt.Step = 1, 1
	if err := tr.markStep(); err != nil {
		t.Fatal(err)
	}
	if err := tr.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	return qm, rc
}

func TestReliability8_ResumeStateOutOfRange(t *testing.T) {
	ctx := context.Background()
	for _, pos := range []string{`{"epoch":0,"group":99,"record":0}`, `{"epoch":0,"group":0,"record":-5}`, `{"epoch":-1,"group":0,"record":0}`} {
		t.Run(pos, func(t *testing.T) {
			qm, rc := checkpointedTrainer(t)
			var err error
			state := filepath.Join(rc.Dir, CheckpointDir, ckptName(1), StateFile)
			b, _ := os.ReadFile(state)
			var st map[string]json.RawMessage
			json.Unmarshal(b, &st)
			st["data_position"] = json.RawMessage(pos)
			b, _ = json.Marshal(st)
			os.WriteFile(state, b, 0o644)
			_, err = newTrainer(ctx, rc, qm)
			if err == nil || !strings.HasPrefix(err.Error(), "train: "+state+": data_position") {
				t.Fatalf("resume from %s: %v", pos, err)
			}
		})
	}
}

// fakeRun writes a minimal finished run under a fresh root: a 16-colour
// palette, an empty download output, a quantize output holding recs (also
// as its test split), and a train output with a tiny model for 2×2 grids.
// It returns the quantize and train folders.
func fakeRun(t *testing.T, recs ...records.Tokens) (qdir, rundir string) {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	write := func(stage, key string, files map[string][]byte, meta map[string]any, inputs ...Input) string {
		dir := filepath.Join(root, stage, key)
		m := &Manifest{Stage: stage, Key: key, Dir: dir, Meta: meta, Inputs: inputs}
		for name, b := range files {
			if err := storage.WriteFile(ctx, filepath.Join(dir, name), b); err != nil {
				t.Fatal(err)
			}
			split := ""
			if strings.HasSuffix(name, ".tokens") {
				split = "test"
			}
			m.Files = append(m.Files, FileInfo{Name: name, Split: split})
		}
		if err := writeManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	pal := &records.Palette{K: 16}
	for i := 0; i < 16; i++ {
		pal.Centres = append(pal.Centres, [3]float32{float32(i * 16), 0, 0})
	}
	pb, err := records.EncodePalette(pal)
	if err != nil {
		t.Fatal(err)
	}
	write("palette", "aaaaaaaaaaaa", map[string][]byte{PaletteFile: pb}, nil)
	write("download", "bbbbbbbbbbbb", nil, nil)
	var buf bytes.Buffer
	w, _ := records.NewWriter(&buf, records.KindTokens)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	qdir = write("quantize", "cccccccccccc", map[string][]byte{"test-00000-of-00001.tokens": buf.Bytes()}, map[string]any{"vocab": 16},
		Input{"download", "bbbbbbbbbbbb"}, Input{"palette", "aaaaaaaaaaaa"})
	p, err := model.NewParams(model.Config{Layers: 1, D: 8, Heads: 1, Seq: 4, Vocab: 16})
	if err != nil {
		t.Fatal(err)
	}
	p.Init(1)
	var wb bytes.Buffer
	if err := model.SaveCheckpoint(&wb, p, nil); err != nil {
		t.Fatal(err)
	}
	ck := storage.Join(CheckpointDir, ckptName(1))
	rundir = write("train", "dddddddddddd", map[string][]byte{storage.Join(ck, WeightsFile): wb.Bytes()}, map[string]any{"checkpoint": ck},
		Input{"quantize", "cccccccccccc"})
	return qdir, rundir
}

// TestReliability6_GridsOfMixedSizes: sample refuses (tools tests show) a split whose
// records differ in size, or hold a token past the palette, naming the
// record, where they panicked.
func TestReliability6_GridsOfMixedSizes(t *testing.T) {
	ctx := context.Background()
	mixed := []records.Tokens{tokRec("small", 2, 2, 16, 1), tokRec("big", 3, 3, 16, 1)}
	past := []records.Tokens{tokRec("ok", 2, 2, 16, 1), tokRec("past", 2, 2, 65535, 600)}
	for _, tc := range []struct {
		name string
		recs []records.Tokens
		want string
	}{{"mixed sizes", mixed, `("big") is 3×3`}, {"token past palette", past, `("past"): token 600`}} {
		t.Run(tc.name, func(t *testing.T) {
			_, rundir := fakeRun(t, tc.recs[0])
			run, err := loadRun(ctx, rundir)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = Complete(run.m, tc.recs, 1, 0.5, model.SampleOptions{Temperature: 1}, run.codec, 2)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("complete: %v, want it to name %s", err, tc.want)
			}
		})
	}
}

// pngClaiming returns a valid 1×1 PNG whose header claims w×h pixels.
func pngClaiming(t *testing.T, w, h uint32) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// signature (8), IHDR length (4), "IHDR" (4), width, height, ...
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// TestReliability7_SampleArguments: a picture whose header claims
// 100000×100000 is refused before decoding (bounded allocation); keep and
// scale outside their ranges are errors, not panics or blank PNGs.
func TestReliability7_SampleArguments(t *testing.T) {
	ctx := context.Background()
	_, rundir := fakeRun(t, tokRec("a", 2, 2, 16, 1))
	opt := model.SampleOptions{Temperature: 1}
	huge := pngClaiming(t, 100000, 100000)
	var err error
	n := testutil.Allocated(func() { _, err = CompletePicture(ctx, rundir, huge, 1, 0.5, opt, 2) })
	if err == nil || !strings.Contains(err.Error(), "100000×100000") {
		t.Errorf("100000×100000 picture: %v", err)
	}
	if n > 64<<20 {
		t.Errorf("refusing the picture allocated %d MB", n>>20)
	}
	small := pngClaiming(t, 1, 1)
	if _, err := CompletePicture(ctx, rundir, small, 1, 0.5, opt, 2); err != nil {
		t.Fatalf("a real 1×1 picture: %v", err)
	}
	for _, keep := range []float64{1.5, -1, 0, 1} {
		_, err := CompletePicture(ctx, rundir, small, 1, keep, opt, 2)
		if err == nil || !strings.Contains(err.Error(), "--keep") {
			t.Errorf("keep %v: %v", keep, err)
		}
	}
	for _, scale := range []int{1_000_000, 0, -3} {
		for what, f := range map[string]func() error{
			"complete": func() error { _, err := CompletePicture(ctx, rundir, small, 1, 0.5, opt, scale); return err },
			"sample":   func() error { _, err := SampleGrid(ctx, rundir, 1, opt, scale); return err },
		} {
			if err := f(); err == nil || !strings.Contains(err.Error(), "--scale") {
				t.Errorf("%s --scale %d: %v", what, scale, err)
			}
		}
	}
}

// TestReliability21_TrailingSlash: folders named with a trailing slash
// work like the folder.
func TestReliability21_TrailingSlash(t *testing.T) {
	ctx := context.Background()
	_, rundir := fakeRun(t, tokRec("a", 2, 2, 16, 1))
	for _, suffix := range []string{"/", "//"} {
		if _, err := SampleGrid(ctx, rundir+suffix, 1, model.SampleOptions{Temperature: 1}, 2); err != nil {
			t.Errorf("sample %s%s: %v", rundir, suffix, err)
		}
	}
}

// TestReliability15_ManifestPathsStayInside: a manifest naming a file
// outside its folder (.., absolute), an input that leaves the root, or a
// checkpoint outside the train folder is refused naming the manifest and
// the field, and nothing is read from there.
func TestReliability15_ManifestPathsStayInside(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ name, json, want string }{
		{"dotdot file", `{"stage":"quantize","key":"0123456789ab","files":[{"name":"../../../../../../etc/hostname","split":"train"}]}`, "files[0].name"},
		{"absolute file", `{"stage":"quantize","key":"0123456789ab","files":[{"name":"ok.tokens"},{"name":"/etc/hostname","split":"train"}]}`, "files[1].name"},
		{"other root", `{"stage":"quantize","key":"0123456789ab","files":[{"name":"../../../other/quantize/0123456789ab/x.tokens"}]}`, "files[0].name"},
		{"input leaves root", `{"stage":"quantize","key":"0123456789ab","inputs":[{"stage":"palette","key":"../../../x"}]}`, "inputs[0]"},
		{"checkpoint outside", `{"stage":"train","key":"0123456789ab","meta":{"checkpoint":"../../../../etc"}}`, "meta.checkpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "quantize", "0123456789ab")
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, ManifestName), []byte(tc.json), 0o644)
			err := func() error {
				m, err := ReadManifest(ctx, dir)
				if err != nil {
					return err
				}
				_, err = ReadTrainOutput(m)
				return err
			}()
			if err == nil {
				t.Fatal("accepted")
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			if !strings.Contains(first, filepath.Join(dir, ManifestName)) || !strings.Contains(first, tc.want) {
				t.Errorf("error does not name the manifest and %s: %v", tc.want, err)
			}
		})
	}
	// A stage whose Run lists such a name is not marked done either.
	for _, name := range []string{"../x", "/etc/hostname", ""} {
		m := &Manifest{Dir: t.TempDir(), Files: []FileInfo{{Name: name}}}
		if err := m.checkFiles(ctx); err == nil {
			t.Errorf("checkFiles accepted %q", name)
		}
	}
}

func failingShardFn(x int) (int, error) {
	return 0, fmt.Errorf("pipelines: read /data/train-00003.shard: corrupt frame at offset 12 (record 4)")
}

func init() { register.Function1x2(failingShardFn) }

// TestReliability20_RunnerErrorCauseFirst: a DoFn's error comes first in
// what a failing pipeline returns, not "prism runner: job job-001
// failed:" with the cause a dozen lines down.
func TestReliability20_RunnerErrorCauseFirst(t *testing.T) {
	p, s := beam.NewPipelineWithRoot()
	beam.ParDo(s, failingShardFn, beam.Create(s, 1, 2))
	_, err := runPipeline(context.Background(), &RunContext{Runner: "prism"}, p)
	if err == nil {
		t.Fatal("no error")
	}
	first := strings.SplitN(err.Error(), "\n", 2)[0]
	if first != "pipelines: read /data/train-00003.shard: corrupt frame at offset 12 (record 4)" {
		t.Errorf("first line %q; whole error:\n%v", first, err)
	}
	if !strings.Contains(err.Error(), "prism runner: job") {
		t.Errorf("the runner's report is gone: %v", err)
	}
	// Reports without a cause part are kept as they are.
	if c := rootCause("prism runner: job job-001 failed: connection refused"); c != "" {
		t.Errorf("rootCause of a report without a cause: %q", c)
	}
}

// TestReliabilityChild is the child process of the kill -9 test: it runs
// the slow chain, forced, on the root in IGPT_RELIABILITY_ROOT.
func TestReliabilityChild(t *testing.T) {
	root := os.Getenv("IGPT_RELIABILITY_ROOT")
	if root == "" {
		t.Skip("child of TestReliability1_KillNineLoop only")
	}
	reg, a, b := slowChain()
	a.pause, b.pause = 30*time.Millisecond, 30*time.Millisecond
	a.mark = os.Getenv("IGPT_RELIABILITY_MARK")
	reg["a"], reg["b"] = a, b
	cfg, err := ParseConfig([]byte("root: " + root + "\ndataset: {name: cifar10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPlan(context.Background(), cfg, reg)
	if err == nil {
		err = p.RunAll(context.Background(), Options{Force: true})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestReliability1_KillNineLoop kills a forced run with SIGKILL at eight
// fixed delays after it started stage a (its progress marker), 0 to 175 ms
// into a chain of two stages that takes at least 240 ms (eight 30 ms
// writes): while it holds the lock, mid-write, mid-swap. Each kill must
// land on the live process (it died of SIGKILL); after each, a finished
// output was never lost or left incomplete, and the next run takes the
// dead run's lock over and finishes.
func TestReliability1_KillNineLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	root := t.TempDir()
	cfg, err := ParseConfig([]byte("root: " + root + "\ndataset: {name: cifar10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	reg, _, _ := slowChain()
	ctx := context.Background()
	p, _ := newPlan(ctx, cfg, reg)
	if err := p.RunAll(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, st := range p.Steps {
		for _, f := range st.Manifest.Files {
			b, _ := os.ReadFile(st.Manifest.Path(f.Name))
			want[st.Stage.Name()+"/"+f.Name] = string(b)
		}
	}
	mark := filepath.Join(t.TempDir(), "started")
	const trials = 8
	landed := 0
	for i := 0; i < trials; i++ {
		os.Remove(mark)
		cmd := exec.Command(os.Args[0], "-test.run=^TestReliabilityChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "IGPT_RELIABILITY_ROOT="+root, "IGPT_RELIABILITY_MARK="+mark)
		if err := cmd.Start(); err != nil {
			t.Fatalf("cannot start the child: %v", err)
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
			if _, err := os.Stat(mark); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("kill %d: the child never started stage a", i)
			}
		}
		time.Sleep(time.Duration(i*25) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d, %d ms into stage a: the child was not killed (%v): the kill landed on nothing", i, i*25, cmd.ProcessState)
		}
		if _, err := os.Stat(mark); err != nil {
			t.Fatalf("kill %d landed before the child started stage a: it tested process start-up, not a stage", i)
		}
		landed++
		locks, _ := filepath.Glob(filepath.Join(root, "*", "*.lock"))
		attempts, _ := filepath.Glob(filepath.Join(root, "*", "*.attempt"))
		t.Logf("kill %d: left %d locks, %d attempt folders", i, len(locks), len(attempts))
		// Every stage is still done, and every file it lists exists with
		// the same bytes (the key is the content).
		p, err := newPlan(ctx, cfg, reg)
		if err != nil {
			t.Fatalf("kill %d: %v", i, err)
		}
		for _, st := range p.Steps {
			if !st.Done() {
				t.Fatalf("kill %d: stage %s lost its finished output", i, st.Stage.Name())
			}
			for _, f := range st.Manifest.Files {
				b, err := os.ReadFile(st.Manifest.Path(f.Name))
				if err != nil || string(b) != want[st.Stage.Name()+"/"+f.Name] {
					t.Fatalf("kill %d: %s/%s: %q, %v", i, st.Stage.Name(), f.Name, b, err)
				}
			}
		}
		// The next forced run takes the dead run's lock over.
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = p.RunOne(tctx, "a", Options{Force: true})
		cancel()
		if err != nil {
			t.Fatalf("kill %d: rerun after the kill: %v", i, err)
		}
	}
	t.Logf("%d of %d kills landed mid-chain", landed, trials)
	assertDoneComplete(t, cfg, reg)
}
