package serve

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/igpt/igpt/stages"
)

// chromium finds Debian's chromium. Without it the browser test skips,
// or fails when IGPT_REQUIRE_BROWSER=1 (CI sets it and installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium on PATH: apt-get install chromium (Debian) to run the real-browser test of igpt serve"
	if os.Getenv("IGPT_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + " (IGPT_REQUIRE_BROWSER=1)")
	}
	t.Skip(msg)
	return ""
}

// countingHandler counts the bytes of every response body.
type countingHandler struct {
	h http.Handler
	n atomic.Int64
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}
func (w countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.h.ServeHTTP(countingWriter{w, &c.n}, r)
}

// TestBrowser drives headless Chromium through igpt serve on a root made
// by a tiny real run: the overview, one run (loss chart points = lines of
// metrics.jsonl), the step slider (every panel changes), an uploaded
// picture's completion, a chart that grows while a train runs beside it,
// and the compare page. IGPT_SCREENSHOTS=DIR saves screenshots there.
func TestBrowser(t *testing.T) {
	bin := chromium(t)
	root := copyRoot(t)
	key := onlyKey(t, root, "train")
	s, err := New(context.Background(), Options{Root: root, Addr: "127.0.0.1:0", Poll: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ch := &countingHandler{h: s.Handler()}
	ts := httptest.NewServer(ch)
	defer ts.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	shots := os.Getenv("IGPT_SCREENSHOTS")
	shot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(80))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	evalInt := func(expr string) int {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	evalStrings := func(expr string) []string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	poll := func(what, expr string, wait time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(wait))); err != nil {
			t.Fatalf("%s (%s): %v", what, expr, err)
		}
	}

	// Overview.
	do("overview", chromedp.Navigate(ts.URL+"/"), chromedp.WaitVisible("#runs"))
	rows := evalInt(`document.querySelectorAll("#runs tr[data-ref]").length`)
	shot("serve-overview.jpg")
	if rows != 7 {
		t.Errorf("overview: %d rows, want 7", rows)
	}

	// One run: the loss chart has a point per metrics line.
	metrics, _ := os.ReadFile(filepath.Join(root, "train", key, stages.MetricsFile))
	lines := strings.Count(string(metrics), "\n")
	ch.n.Store(0)
	do("run page", chromedp.Navigate(ts.URL+"/run/train/"+key),
		chromedp.WaitVisible(`#card-train path.series[data-name="loss"]`), chromedp.WaitVisible(`.steppanel`))
	points := evalInt(`(() => { const c = [...document.querySelectorAll("#card-train .chart")].find(c => c.dataset.title === "loss by step");
			const d = c.querySelector('path[data-name="loss"]').getAttribute("d"); return (d.match(/[ML]/g) || []).length; })()`)
	if points != lines || lines != 20 {
		t.Errorf("loss chart: %d points, metrics.jsonl has %d lines", points, lines)
	}
	// Every step panel has loaded; the slider moves them all.
	panelsLoaded := `[...document.querySelectorAll(".steppanel")].every(i => i.complete && i.naturalWidth > 0)`
	poll("step panels", panelsLoaded, 30*time.Second)
	before := evalStrings(`[...document.querySelectorAll(".steppanel")].map(i => i.src)`)
	evalInt(`(() => { const s = document.getElementById("stepslider"); s.value = 0; s.dispatchEvent(new Event("input")); return 0; })()`)
	poll("step panels after the slider", panelsLoaded, 30*time.Second)
	after := evalStrings(`[...document.querySelectorAll(".steppanel")].map(i => i.src)`)
	shot("serve-run.jpg")
	if len(before) != 2 || len(after) != 2 {
		t.Fatalf("step panels: %v %v", before, after)
	}
	for i := range before {
		if before[i] == after[i] {
			t.Errorf("step panel %d did not change: %s", i, before[i])
		}
	}
	t.Logf("run page transferred %d bytes (bodies, all requests)", ch.n.Load())

	// Upload a picture; the completions arrive.
	pic := filepath.Join(t.TempDir(), "mine.png")
	os.WriteFile(pic, pngBytes(48, 48, func(x, y int) colorRGBA { return colorRGBA{R: uint8(x * 5), G: uint8(200 - y*3), B: 120, A: 255} }), 0o644)
	do("completion", chromedp.SetUploadFiles(`form.complete input[name=picture]`, []string{pic}),
		chromedp.Click(`form.complete button[type=submit]`), chromedp.WaitVisible(`.completion[data-done="1"] img`),
		chromedp.ScrollIntoView(`form.complete`))
	imgs := evalInt(`document.querySelectorAll('.completion[data-done="1"] img').length`)
	shot("serve-completion.jpg")
	if imgs != 3 {
		t.Errorf("completion: %d pictures, want 3", imgs)
	}

	// A train runs beside the page: its chart grows without a reload.
	src := filepath.Join(filepath.Dir(tinyRoot(t)), "src")
	done := make(chan error, 1)
	yaml := strings.Replace(trainYAML(root, src, 400), "checkpoint_every: 7", "checkpoint_every: 20", 1)
	go func() { done <- runConfig(context.Background(), yaml) }()
	var live string
	waitFor(t, 30*time.Second, "the second train's folder", func() bool {
		ents, _ := os.ReadDir(filepath.Join(root, "train"))
		for _, e := range ents {
			if e.IsDir() && e.Name() != key {
				live = e.Name()
				return true
			}
		}
		return false
	})
	lossN := `(() => { const p = document.querySelector('#card-train path.series[data-name="loss"]'); return p ? +p.dataset.n : 0; })()`
	var n2 int
	do("live page", chromedp.Navigate(ts.URL+"/run/train/"+live))
	poll("live chart", lossN+` > 0`, 30*time.Second)
	n1 := evalInt(lossN)
	state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#card-train .state").textContent`))
	if state == "running" {
		poll("live growth", fmt.Sprintf(`%s > %d || document.querySelector("#card-train .live").textContent.startsWith("finished")`, lossN, n1), 60*time.Second)
		n2 = evalInt(lossN)
		if n2 <= n1 {
			t.Errorf("live chart did not grow: %d then %d points", n1, n2)
		}
	} else {
		t.Errorf("the page saw the second train %s, not running: it finished before the page opened (make it longer)", state)
	}
	if err := <-done; err != nil {
		t.Fatalf("the train beside the page: %v", err)
	}

	// Side by side.
	do("compare", chromedp.Navigate(ts.URL+"/compare?run=train/"+key+"&run=train/"+live))
	poll("compare curves", `document.querySelectorAll(".curves path.series").length >= 4`, 30*time.Second)
	series := evalInt(`document.querySelectorAll(".curves path.series").length`)
	shot("serve-compare.jpg")
	t.Logf("compare: %d series; live chart %d then %d points", series, n1, n2)
}
