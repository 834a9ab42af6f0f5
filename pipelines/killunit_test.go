package pipelines

// A worker killed mid-unit (issue 30): Dataflow retries the bundle on
// another worker, into the same stage folder. The retry must leave the
// same shards, byte for byte, as a run that was never killed, and what the
// killed worker was writing must never appear under a shard's name.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/datasets"
)

const (
	killUnitEnv     = "IGPT_KILLUNIT_TASK" // the child's unit task file
	killUnitDirEnv  = "IGPT_KILLUNIT_DIR"  // its output folder
	killUnitMarkEnv = "IGPT_KILLUNIT_MARK" // written at its first shard
	killUnitShard   = 3 * 64 * 64 * 3      // three images of pixels a shard
)

// noiseFolderUnit writes a folder of one class of n 64×64 noise PNGs (slow
// enough to decode that a unit takes a while) and returns its one unit.
func noiseFolderUnit(t *testing.T, n int) UnitTask {
	t.Helper()
	dir := t.TempDir()
	d := filepath.Join(dir, "train", "noise")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, 64, 64))
		for p := 0; p < len(img.Pix); p += 4 {
			img.Set(p/4%64, p/4/64, color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255})
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("%03d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := datasets.Inspect(context.Background(), datasets.Spec{Name: "folder", Format: datasets.FormatFolder}, dir, datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Units) != 1 {
		t.Fatalf("%d units, want 1", len(l.Units))
	}
	return UnitTask{Index: 0, Unit: l.Units[0]}
}

// runUnit runs the download stage's worker step on one unit into dir and
// returns the stats events it emitted. slow, if not nil, runs after each.
func runUnit(t *testing.T, task UnitTask, dir string, slow func(int)) []string {
	t.Helper()
	b, err := json.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	fn := &ReadUnitFn{Dir: dir, ShardBytes: killUnitShard}
	if err := fn.ProcessElement(context.Background(), string(b), func(ev string) {
		events = append(events, ev)
		if slow != nil {
			slow(len(events))
		}
	}); err != nil {
		t.Fatal(err)
	}
	return events
}

// TestKillUnitChild is the worker the test below kills: it runs one unit,
// marking its first shard and pausing 1 ms after each (a worker is slower
// than a test), then waits to be killed.
func TestKillUnitChild(t *testing.T) {
	taskFile := os.Getenv(killUnitEnv)
	if taskFile == "" {
		t.Skip("run by TestReliabilityWorkerKilledMidUnit")
	}
	b, err := os.ReadFile(taskFile)
	if err != nil {
		t.Fatal(err)
	}
	var task UnitTask
	if err := json.Unmarshal(b, &task); err != nil {
		t.Fatal(err)
	}
	runUnit(t, task, os.Getenv(killUnitDirEnv), func(n int) {
		if n == 1 {
			os.WriteFile(os.Getenv(killUnitMarkEnv), nil, 0o644)
		}
		time.Sleep(time.Millisecond)
	})
	os.WriteFile(os.Getenv(killUnitMarkEnv)+".done", nil, 0o644)
	time.Sleep(time.Hour)
}

// TestReliabilityWorkerKilledMidUnit kills a worker with SIGKILL at eight
// points of one unit (0 to 35 ms after its first shard; the test fails if
// the unit was done by then), retries the unit into the same folder as
// Dataflow retries a bundle, and compares the folder with a run that was
// never killed: the same shard names with the same bytes, the same stats
// events, and nothing else but the killed writer's hidden temporary files.
func TestReliabilityWorkerKilledMidUnit(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	task := noiseFolderUnit(t, 60) // 20 shards of 3 images
	clean := t.TempDir()
	want := runUnit(t, task, clean, nil)
	wantFiles := shardFiles(t, clean)
	if len(wantFiles) != 20 {
		t.Fatalf("a clean run wrote %d shards, want 20", len(wantFiles))
	}
	b, _ := json.Marshal(task)
	taskFile := filepath.Join(t.TempDir(), "task.json")
	if err := os.WriteFile(taskFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	midWrite := 0
	for i := range 8 {
		dir, mark := t.TempDir(), filepath.Join(t.TempDir(), "started")
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillUnitChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), killUnitEnv+"="+taskFile, killUnitDirEnv+"="+dir, killUnitMarkEnv+"="+mark)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
			if _, err := os.Stat(mark); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("kill %d: the worker never wrote its first shard", i)
			}
		}
		time.Sleep(time.Duration(i*5) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: the worker was not killed (%v)", i, cmd.ProcessState)
		}
		if _, err := os.Stat(mark + ".done"); err == nil {
			t.Fatalf("kill %d, %d ms after the first shard, landed after the unit was done: it tested nothing", i, i*5)
		}
		published, temps := len(shardFiles(t, dir)), tempFiles(t, dir)
		if published == 0 || published >= len(wantFiles) {
			t.Fatalf("kill %d left %d of %d shards: not mid-unit", i, published, len(wantFiles))
		}
		if len(temps) > 0 {
			midWrite++
		}
		t.Logf("kill %d, %d ms after the first shard: %d of %d shards published, %d temporary files", i, i*5, published, len(wantFiles), len(temps))
		// The retry, into the same folder.
		got := runUnit(t, task, dir, nil)
		if !slices.Equal(got, want) {
			t.Fatalf("kill %d: the retry's stats events differ from a clean run's:\n%v\n%v", i, got, want)
		}
		gotFiles := shardFiles(t, dir)
		if !slices.Equal(keys(gotFiles), keys(wantFiles)) {
			t.Fatalf("kill %d: the retry left shards %v, a clean run %v", i, keys(gotFiles), keys(wantFiles))
		}
		for name, b := range wantFiles {
			if !bytes.Equal(gotFiles[name], b) {
				t.Fatalf("kill %d: shard %s differs from a clean run's (%d and %d bytes)", i, name, len(gotFiles[name]), len(b))
			}
		}
		for _, tmp := range tempFiles(t, dir) {
			if !strings.HasPrefix(tmp, ".") {
				t.Fatalf("kill %d: %s left in the folder under a visible name", i, tmp)
			}
		}
	}
	t.Logf("%d of 8 kills landed while a shard was being written", midWrite)
}

// shardFiles reads the visible files of dir by name.
func shardFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// tempFiles lists the files of dir that are not published shards.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".msgpack") {
			out = append(out, e.Name())
		}
	}
	return out
}

func keys(m map[string][]byte) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}
