package serve

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/beamboot"
	"github.com/igpt/igpt/stages"
)

func TestMain(m *testing.M) {
	beamboot.MaybeBoot()
	flag.Parse()
	beamboot.TuneWorkerGC()
	beam.Init()
	code := m.Run()
	beamboot.RemoveEmptyWorkerBinary()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// fixture is a root made once per test binary by a tiny real run:
// download, palette, quantize, train (20 steps, 8×8 images), probe,
// probe-baselines and sample.
var fixture struct {
	once sync.Once
	dir  string // holds src/, root/ and the config
	err  error
}

// trainYAML is the config of the fixture's run (stages' test config).
func trainYAML(root, src string, steps int) string {
	return fmt.Sprintf(`root: %s
dataset: {name: folder, source: %s}
download: {shard_mib: 1}
palette: {k: 16}
quantize: {val_fraction: 0.25, shards: {train: 3}}
train: {model: nano, layers: 2, d: 32, heads: 4, batch: 8, steps: %d, warmup_steps: 5, lr: 0.003, eval_every: 10, eval_records: 4, checkpoint_every: 7, threads: 1}
`, root, src, steps)
}

func pngBytes(w, h int, f func(x, y int) color.RGBA) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(x, y, f(x, y))
		}
	}
	var b strings.Builder
	png.Encode(&b, img)
	return []byte(b.String())
}

// imageFolder writes train/test folders of three classes of 8×8 PNGs.
func imageFolder(dir string) error {
	for _, split := range []string{"train", "test"} {
		for ci, class := range []string{"cat", "dog", "emu"} {
			d := filepath.Join(dir, split, class)
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			for i := 0; i < 6; i++ {
				b := pngBytes(8, 8, func(x, y int) color.RGBA {
					return color.RGBA{uint8(ci*80 + x*10), uint8(y*20 + i*5), uint8(100 + ci*40), 255}
				})
				if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("%02d.png", i)), b, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// runConfig plans and runs a config until its finals.
func runConfig(ctx context.Context, yaml string) error {
	cfg, err := stages.ParseConfig([]byte(yaml))
	if err != nil {
		return err
	}
	cfg.Path = "fixture.yaml"
	p, err := stages.NewPlan(ctx, cfg)
	if err != nil {
		return err
	}
	return p.RunAll(ctx, stages.Options{Log: slog.New(slog.DiscardHandler)})
}

// tinyRoot returns the fixture's root (made on first use, ~2 s); tests
// that change a root work on a copy (copyRoot).
func tinyRoot(t testing.TB) string {
	t.Helper()
	fixture.once.Do(func() {
		fixture.dir, fixture.err = os.MkdirTemp("", "igpt-serve-fixture-")
		if fixture.err != nil {
			return
		}
		src, root := filepath.Join(fixture.dir, "src"), filepath.Join(fixture.dir, "root")
		if fixture.err = imageFolder(src); fixture.err != nil {
			return
		}
		fixture.err = runConfig(context.Background(), trainYAML(root, src, 20))
	})
	if fixture.err != nil {
		t.Fatalf("tiny run for the fixture root: %v", fixture.err)
	}
	return filepath.Join(fixture.dir, "root")
}

// copyRoot copies the fixture root into a fresh temp folder.
func copyRoot(t testing.TB) string {
	t.Helper()
	src := tinyRoot(t)
	dst := filepath.Join(t.TempDir(), "root")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// onlyKey returns the one key of a stage under root.
func onlyKey(t testing.TB, root, stage string) string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, stage))
	if err != nil || len(ents) != 1 {
		t.Fatalf("%s folders under %s: %v %v", stage, root, ents, err)
	}
	return ents[0].Name()
}

// newTestServer serves root with httptest on loopback.
func newTestServer(t testing.TB, opt Options) (*Server, *httptest.Server) {
	t.Helper()
	if opt.Addr == "" {
		opt.Addr = "127.0.0.1:0"
	}
	if opt.Poll == 0 {
		opt.Poll = 50 * time.Millisecond
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	s, err := New(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// event is one server-sent event.
type event struct{ name, data string }

// readEvents reads server-sent events from r into a channel until the
// stream ends.
func readEvents(r io.Reader) <-chan event {
	ch := make(chan event, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 1<<16), 16<<20)
		var ev event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			case line == "" && ev.name != "":
				ch <- ev
				ev = event{}
			}
		}
	}()
	return ch
}

// next waits (bounded) for the next event named one of names, skipping
// others.
func next(t testing.TB, ch <-chan event, wait time.Duration, names ...string) event {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended waiting for %v", names)
			}
			for _, n := range names {
				if ev.name == n {
					return ev
				}
			}
		case <-deadline:
			t.Fatalf("no %v event within %s", names, wait)
		}
	}
}

// httptestRecorder is httptest.ResponseRecorder (named for brevity).
type httptestRecorder = httptest.ResponseRecorder

func newRecorder() *httptestRecorder { return httptest.NewRecorder() }

type colorRGBA = color.RGBA
