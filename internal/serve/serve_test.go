package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image/color"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/stages"
)

func TestOverviewRunAndMetrics(t *testing.T) {
	root := tinyRoot(t)
	_, ts := newTestServer(t, Options{Root: root})
	code, body := get(t, ts.URL+"/")
	if code != 200 {
		t.Fatalf("overview: %d %s", code, body)
	}
	for _, st := range []string{"download", "palette", "quantize", "train", "probe", "probe-baselines", "sample"} {
		if !strings.Contains(body, `href="/run/`+st+`/`) {
			t.Errorf("overview lacks a link to the %s output", st)
		}
	}
	if !strings.Contains(body, "val loss") || !strings.Contains(body, "palette MSE") {
		t.Errorf("overview lacks the summary's headlines")
	}
	var ix struct{ Outputs []Output }
	_, b := get(t, ts.URL+"/api/index")
	json.Unmarshal([]byte(b), &ix)
	if len(ix.Outputs) != 7 {
		t.Fatalf("index: %d outputs, want 7", len(ix.Outputs))
	}
	for _, o := range ix.Outputs {
		if o.State != stateDone {
			t.Errorf("%s: state %q, want done", o.Ref, o.State)
		}
	}
	key := onlyKey(t, root, "train")
	var run struct{ Chain []chainItem }
	_, b = get(t, ts.URL+"/api/run/train/"+key)
	json.Unmarshal([]byte(b), &run)
	var chain []string
	for _, it := range run.Chain {
		chain = append(chain, it.Stage)
	}
	if got := strings.Join(chain, ","); got != "download,palette,quantize,train,probe-baselines,probe,sample" {
		t.Errorf("train's chain: %s", got)
	}
	raw, _ := os.ReadFile(filepath.Join(root, "train", key, stages.MetricsFile))
	var lines []json.RawMessage
	_, b = get(t, ts.URL+"/api/metrics/train/"+key)
	json.Unmarshal([]byte(b), &lines)
	if want := bytes.Count(raw, []byte("\n")); len(lines) != want || want != 20 {
		t.Errorf("metrics: %d lines served, file has %d (want 20)", len(lines), want)
	}
	// Every picture the chain lists is served as a PNG.
	for _, it := range run.Chain {
		for _, u := range it.Images {
			if code, body := get(t, ts.URL+u); code != 200 || !strings.HasPrefix(body, "\x89PNG") {
				t.Errorf("%s: %d", u, code)
			}
		}
	}
}

// TestTraversal: nothing outside the root is served: "..", encoded dots
// and slashes, a symlink in a stage folder, a file the manifest does not
// list, a forged manifest path.
func TestTraversal(t *testing.T) {
	root := copyRoot(t)
	secret := filepath.Join(filepath.Dir(root), "secret.png")
	os.WriteFile(secret, []byte("\x89PNG SECRET"), 0o644)
	key := onlyKey(t, root, "train")
	dir := filepath.Join(root, "train", key)
	// loss.png, which the manifest lists, becomes a symlink out of the root.
	os.Remove(filepath.Join(dir, "loss.png"))
	if err := os.Symlink(secret, filepath.Join(dir, "loss.png")); err != nil {
		t.Fatal(err)
	}
	// A stage folder that is a symlink to a folder outside, with a
	// manifest listing the secret.
	outside := filepath.Join(filepath.Dir(root), "outside", "aaaaaaaaaaaa")
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(outside, "secret.png"), []byte("\x89PNG SECRET"), 0o644)
	os.WriteFile(filepath.Join(outside, stages.ManifestName), []byte(`{"stage":"sample","key":"aaaaaaaaaaaa","files":[{"name":"secret.png"}]}`), 0o644)
	os.Symlink(outside, filepath.Join(root, "sample", "aaaaaaaaaaaa"))
	// A forged manifest naming a path outside its folder.
	forged := filepath.Join(root, "sample", "bbbbbbbbbbbb")
	os.MkdirAll(forged, 0o755)
	os.WriteFile(filepath.Join(forged, stages.ManifestName), []byte(`{"stage":"sample","key":"bbbbbbbbbbbb","files":[{"name":"../../../secret.png"}]}`), 0o644)
	os.WriteFile(filepath.Join(dir, "unlisted.png"), []byte("\x89PNG not listed"), 0o644)

	_, ts := newTestServer(t, Options{Root: root})
	cases := []struct {
		path string
		code int
	}{
		{"/file/train/" + key + "/loss.png", 404},                        // symlink out of the root
		{"/file/sample/aaaaaaaaaaaa/secret.png", 404},                    // stage folder is a symlink out
		{"/file/sample/bbbbbbbbbbbb/..%2F..%2F..%2Fsecret.png", 400},     // encoded slashes
		{"/file/sample/bbbbbbbbbbbb/%2e%2e/%2e%2e/%2e%2e/secret.png", 0}, // cleaned or refused, never served
		{"/file/train/" + key + "/../../../secret.png", 0},               // cleaned by the mux: never served
		{"/file/train/" + key + "/unlisted.png", 404},                    // not in the manifest
		{"/file/train/" + key + "/checkpoints/LATEST", 404},              // not a served kind
		{"/file/train/" + key + "/..%5c..%5csecret.png", 400},            // encoded backslash
		{"/file/train/" + key + "/" + strings.Repeat("x/", 3) + "a.png", 404},
	}
	for _, c := range cases {
		req, err := http.NewRequest("GET", ts.URL+c.path, nil) // sent as written
		if err != nil {
			t.Fatal(err)
		}
		r, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(r.Body)
		r.Body.Close()
		if strings.Contains(body.String(), "SECRET") {
			t.Errorf("%s served the secret outside the root", c.path)
		}
		if c.code != 0 && r.StatusCode != c.code {
			t.Errorf("%s: status %d, want %d", c.path, r.StatusCode, c.code)
		}
	}
	// What is listed and inside is served.
	if code, _ := get(t, ts.URL+"/file/train/"+key+"/metrics.jsonl"); code != 200 {
		t.Errorf("metrics.jsonl: %d", code)
	}
}

// TestToken: a non-loopback address gets a token, and every request
// without it is refused; a loopback server answers only to loopback
// host names.
func TestToken(t *testing.T) {
	root := tinyRoot(t)
	s, err := New(context.Background(), Options{Root: root, Addr: "0.0.0.0:8080"})
	if err != nil {
		t.Fatal(err)
	}
	tok := s.Token()
	if len(tok) < 32 {
		t.Fatalf("non-loopback address: token %q, want a generated one", tok)
	}
	h := s.Handler()
	do := func(path string, mod func(*http.Request)) *httptestRecorder {
		req, _ := http.NewRequest("GET", "http://10.0.0.1:8080"+path, nil)
		if mod != nil {
			mod(req)
		}
		rec := newRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, p := range []string{"/", "/api/index", "/api/run/train/" + onlyKey(t, root, "train"), "/static/app.js"} {
		if rec := do(p, nil); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s without token: %d, want 401", p, rec.Code)
		}
		if rec := do(p+"?token=wrong"+tok[:4], nil); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", p, rec.Code)
		}
	}
	rec := do("/?token="+tok, nil)
	if rec.Code != 200 {
		t.Fatalf("with the token: %d", rec.Code)
	}
	cookie := rec.Header().Get("Set-Cookie")
	if !strings.Contains(cookie, tokenCookie+"="+tok) || !strings.Contains(cookie, "HttpOnly") {
		t.Errorf("cookie %q", cookie)
	}
	if rec := do("/api/index", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: tokenCookie, Value: tok}) }); rec.Code != 200 {
		t.Errorf("with the cookie: %d", rec.Code)
	}
	if rec := do("/api/index", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }); rec.Code != 200 {
		t.Errorf("with the bearer header: %d", rec.Code)
	}
	// Loopback: no token, but only loopback host names (DNS rebinding).
	l, _ := New(context.Background(), Options{Root: root, Addr: "127.0.0.1:8080"})
	if l.Token() != "" {
		t.Errorf("loopback got a token")
	}
	req, _ := http.NewRequest("GET", "http://evil.example:8080/api/index", nil)
	rec = newRecorder()
	l.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusMisdirectedRequest {
		t.Errorf("loopback server, Host evil.example: %d, want 421", rec.Code)
	}
}

// bombPNG is a valid PNG signature and header claiming w×h pixels, with
// no image data: tiny on the wire, huge if decoded.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk := append([]byte("IHDR"), ihdr...)
	binary.Write(&b, binary.BigEndian, uint32(13))
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func postComplete(t testing.TB, url string, fields map[string]string, picture []byte) (int, string) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	if picture != nil {
		fw, _ := mw.CreateFormFile("picture", "picture.png")
		fw.Write(picture)
	}
	mw.Close()
	r, err := http.Post(url+"/api/complete", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(r.Body)
	return r.StatusCode, b.String()
}

// TestUploadBomb: a picture whose header claims more pixels than
// stages.MaxPicturePixels, or a body over the byte cap, is refused before
// anything is queued or decoded.
func TestUploadBomb(t *testing.T) {
	root := tinyRoot(t)
	key := onlyKey(t, root, "train")
	s, ts := newTestServer(t, Options{Root: root})
	var ran atomic.Int32
	s.beforeJob = func(context.Context, string) { ran.Add(1) }
	code, body := postComplete(t, ts.URL, map[string]string{"run": key}, bombPNG(100000, 100000))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "pixels") {
		t.Errorf("100000×100000 header: %d %s, want 413 naming the pixels", code, body)
	}
	big := make([]byte, maxUploadBytes+2<<20)
	copy(big, pngBytes(8, 8, func(x, y int) color.RGBA { return color.RGBA{1, 2, 3, 255} }))
	code, body = postComplete(t, ts.URL, map[string]string{"run": key}, big)
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("%d-byte upload: %d %s, want 413", len(big), code, body)
	}
	code, body = postComplete(t, ts.URL, map[string]string{"run": key}, []byte("not a picture"))
	if code != http.StatusBadRequest {
		t.Errorf("garbage upload: %d %s, want 400", code, body)
	}
	if n := s.queueFor(key); len(n.waiting) != 0 || ran.Load() != 0 {
		t.Errorf("a refused upload was queued or ran")
	}
}

// TestQueue: one job per model at a time, the next one waiting with its
// position; a job nobody watches is cancelled and frees the model.
func TestQueue(t *testing.T) {
	root := tinyRoot(t)
	key := onlyKey(t, root, "train")
	s, ts := newTestServer(t, Options{Root: root, JobTimeout: time.Minute})
	s.abandonAfter = 500 * time.Millisecond
	var active, maxActive atomic.Int32
	release := make(chan struct{})
	var first sync.Once
	s.beforeJob = func(ctx context.Context, kind string) {
		n := active.Add(1)
		defer active.Add(-1)
		for {
			m := maxActive.Load()
			if n <= m || maxActive.CompareAndSwap(m, n) {
				break
			}
		}
		blocked := false
		first.Do(func() { blocked = true })
		if blocked {
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
		}
	}
	submit := func() (string, int) {
		code, body := postComplete(t, ts.URL, map[string]string{"run": key, "test": "0", "n": "2"}, nil)
		if code != 200 {
			t.Fatalf("complete: %d %s", code, body)
		}
		var r struct {
			Job      string
			Position int
		}
		json.Unmarshal([]byte(body), &r)
		return r.Job, r.Position
	}
	watch := func(id string) (<-chan event, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/jobs/"+id, nil)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return readEvents(r.Body), func() { cancel(); r.Body.Close() }
	}
	a, _ := submit()
	evA, stopA := watch(a)
	defer stopA()
	// A is running (blocked in the hook) once the queue has taken it.
	waitFor(t, 10*time.Second, "job A running", func() bool {
		q := s.queueFor(key)
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.running != nil && q.running.id == a
	})
	b, pos := submit()
	if pos != 1 {
		t.Errorf("second job for the same model: position %d, want 1 (waiting behind the first)", pos)
	}
	evB, stopB := watch(b)
	defer stopB()
	var q jobSnapshot
	json.Unmarshal([]byte(next(t, evB, 10*time.Second, "queue", "tokens", "done").data), &q)
	if q.State != "queued" || q.Position != 1 {
		t.Errorf("B's first event: %+v, want queued at position 1", q)
	}
	close(release)
	for name, ch := range map[string]<-chan event{"A": evA, "B": evB} {
		var d jobSnapshot
		json.Unmarshal([]byte(next(t, ch, 30*time.Second, "done", "error").data), &d)
		if d.State != "done" || len(d.Images) != 2 || d.Done != d.Total {
			t.Errorf("%s: %+v", name, d.State)
		}
	}
	if m := maxActive.Load(); m != 1 {
		t.Errorf("%d jobs ran at once on one model, want 1", m)
	}
	// A client that submits and never watches does not hold the model:
	// its job is cancelled, and the next one runs.
	var dropped sync.Once
	s.beforeJob = func(ctx context.Context, kind string) {
		dropped.Do(func() { // the first job holds the model until cancelled
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Second):
			}
		})
	}
	submit() // never watched
	c, _ := submit()
	evC, stopC := watch(c)
	defer stopC()
	var d jobSnapshot
	json.Unmarshal([]byte(next(t, evC, 20*time.Second, "done", "error").data), &d)
	if d.State != "done" {
		t.Errorf("C, behind a job nobody watched: %s %s", d.State, d.Error)
	}
}

func waitFor(t testing.TB, wait time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCompletionStreams: an uploaded picture is completed with tokens
// streamed before the end; the pictures of two checkpoints differ.
func TestCompletionStreams(t *testing.T) {
	root := tinyRoot(t)
	key := onlyKey(t, root, "train")
	s, ts := newTestServer(t, Options{Root: root})
	// The job waits half way until the stream has shown a partial
	// picture, so the test sees streaming however fast the model is.
	partialSeen := make(chan struct{})
	var once sync.Once
	s.afterToken = func(done, total int) {
		if done == total/2 {
			select {
			case <-partialSeen:
			case <-time.After(20 * time.Second):
			}
		}
	}
	pic := pngBytes(40, 30, func(x, y int) color.RGBA { return color.RGBA{uint8(x * 6), uint8(y * 8), 90, 255} })
	code, body := postComplete(t, ts.URL, map[string]string{"run": key, "n": "3", "keep": "0.25", "temperature": "1", "top_k": "8"}, pic)
	if code != 200 {
		t.Fatalf("complete: %d %s", code, body)
	}
	var r struct{ Events string }
	json.Unmarshal([]byte(body), &r)
	resp, err := http.Get(ts.URL + r.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ch := readEvents(resp.Body)
	var partial, final jobSnapshot
	for ev := range ch {
		var sn jobSnapshot
		json.Unmarshal([]byte(ev.data), &sn)
		if ev.name == "tokens" && sn.Done < sn.Total && partial.Total == 0 {
			partial = sn
			once.Do(func() { close(partialSeen) })
		}
		if ev.name == "done" || ev.name == "error" {
			final = sn
			break
		}
	}
	if final.State != "done" || len(final.Images) != 3 || final.Done != final.Total || final.Total != 64-2*8 {
		t.Fatalf("final: state %s error %q, %d images, %d/%d tokens", final.State, final.Error, len(final.Images), final.Done, final.Total)
	}
	if partial.Total == 0 || len(partial.Images) != 3 {
		t.Errorf("no picture streamed before the end (first partial %+v)", partial.Done)
	}
	if final.FirstMS <= 0 || final.TokensPS <= 0 {
		t.Errorf("timings: first token %v ms, %v tokens/s", final.FirstMS, final.TokensPS)
	}
	var steps []struct{ Checkpoint string }
	_, b := get(t, ts.URL+"/api/steps/"+key)
	json.Unmarshal([]byte(b), &steps)
	if len(steps) != 2 {
		t.Fatalf("steps: %s", b)
	}
	for _, kind := range []string{"samples.png", "completions.png"} {
		_, p0 := get(t, ts.URL+"/img/step/"+key+"/"+steps[0].Checkpoint+"/"+kind)
		_, p1 := get(t, ts.URL+"/img/step/"+key+"/"+steps[1].Checkpoint+"/"+kind)
		if !strings.HasPrefix(p0, "\x89PNG") || p0 == p1 {
			t.Errorf("%s: checkpoints draw the same picture or none", kind)
		}
	}
	if code, _ := get(t, ts.URL+"/img/step/"+key+"/..%2Fx/samples.png"); code == 200 {
		t.Errorf("a bad checkpoint name was served")
	}
}

// TestLiveAndStates: a run without a manifest whose lock a live process
// holds is running, and its stream carries each new metrics line, its
// progress and, once the manifest appears, the end. A dead holder's lock
// is stale; a started run without lock or manifest failed.
func TestLiveAndStates(t *testing.T) {
	root := copyRoot(t)
	key := onlyKey(t, root, "train")
	dir := filepath.Join(root, "train", key)
	manifest, _ := os.ReadFile(filepath.Join(dir, stages.ManifestName))
	metrics, _ := os.ReadFile(filepath.Join(dir, stages.MetricsFile))
	lines := strings.SplitAfter(string(metrics), "\n")
	os.Remove(filepath.Join(dir, stages.ManifestName))
	os.WriteFile(filepath.Join(dir, stages.MetricsFile), []byte(strings.Join(lines[:5], "")), 0o644)
	host, _ := os.Hostname()
	lock, _ := json.Marshal(storage.LockInfo{PID: os.Getpid(), Host: host, Time: time.Now(), Token: "t"})
	os.WriteFile(dir+".lock", lock, 0o644)
	os.WriteFile(filepath.Join(dir, stages.RunningFile), []byte(`{"stage":"train","key":"`+key+`","config":{"steps":20},"started":"2026-01-01T00:00:00Z"}`), 0o644)
	// A stale lock (its holder, on this host, is gone) and a failed run.
	stale := filepath.Join(root, "train", "0000000000aa")
	os.MkdirAll(stale, 0o755)
	dead, _ := json.Marshal(storage.LockInfo{PID: 1 << 30, Host: host, Time: time.Now(), Token: "t"})
	os.WriteFile(stale+".lock", dead, 0o644)
	failed := filepath.Join(root, "train", "0000000000bb")
	os.MkdirAll(failed, 0o755)
	os.WriteFile(filepath.Join(failed, stages.RunningFile), []byte(`{"stage":"train","config":{"steps":5}}`), 0o644)

	_, ts := newTestServer(t, Options{Root: root, Poll: 50 * time.Millisecond})
	var ix struct{ Outputs []Output }
	_, b := get(t, ts.URL+"/api/index")
	json.Unmarshal([]byte(b), &ix)
	states := map[string]string{}
	for _, o := range ix.Outputs {
		if o.Stage == "train" {
			states[o.Key] = o.State
		}
	}
	want := map[string]string{key: stateRunning, "0000000000aa": stateStale, "0000000000bb": stateFailed}
	for k, w := range want {
		if states[k] != w {
			t.Errorf("train/%s: state %q, want %q", k, states[k], w)
		}
	}
	resp, err := http.Get(ts.URL + "/api/events/train/" + key)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ch := readEvents(resp.Body)
	count := func(ev event) int {
		var d struct{ Lines []json.RawMessage }
		json.Unmarshal([]byte(ev.data), &d)
		return len(d.Lines)
	}
	if n := count(next(t, ch, 10*time.Second, "metrics")); n != 5 {
		t.Errorf("first metrics event: %d lines, want 5", n)
	}
	var p progress
	json.Unmarshal([]byte(next(t, ch, 10*time.Second, "progress").data), &p)
	if p.Step != 5 || p.Total != 20 || p.Percent != 25 || p.ETASeconds <= 0 {
		t.Errorf("progress %+v, want step 5 of 20 with an ETA", p)
	}
	// The file grows (written whole, as the train stage does).
	storage.WriteFile(context.Background(), filepath.Join(dir, stages.MetricsFile), []byte(strings.Join(lines[:12], "")))
	if n := count(next(t, ch, 10*time.Second, "metrics")); n != 7 {
		t.Errorf("after growing to 12 lines: %d new lines, want 7", n)
	}
	storage.WriteFile(context.Background(), filepath.Join(dir, stages.MetricsFile), metrics)
	os.WriteFile(filepath.Join(dir, stages.ManifestName), manifest, 0o644)
	next(t, ch, 10*time.Second, "done")
	if _, ok := <-ch; ok {
		// Only events already in flight may follow "done".
		for range ch {
		}
	}
	fmt.Fprint(os.Stderr, "")
}
