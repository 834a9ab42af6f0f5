package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/igpt/igpt/internal/imgproc"
	"github.com/igpt/igpt/internal/records"
	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/stages"
)

// Limits of a completion request.
const (
	// maxUploadBytes caps an uploaded picture's bytes; its pixels are
	// capped by stages.MaxPicturePixels, checked on the header before
	// decoding, as igpt sample --complete does.
	maxUploadBytes = 16 << 20
	maxCompletions = 4
)

// job is one use of a model: a completion (streamed) or a checkpoint
// picture (waited for). It runs in its model's queue.
type job struct {
	id     string
	kind   string
	ctx    context.Context
	cancel context.CancelFunc
	work   func(ctx context.Context, j *job) error

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	position int           // 0: running (or done), n: n-th waiting
	state    string        // queued, running, done, error
	err      string
	h, w     int
	codec    stages.Codec
	prefix   int        // tokens kept of each sequence
	toks     [][]uint16 // [n][h*w] tokens so far (not yet sampled: prefix only)
	done     int        // positions sampled
	total    int        // positions to sample
	created  time.Time
	started  time.Time
	first    time.Time // first sampled token
	finished time.Time
	watchers int
	seen     time.Time // last time a watcher was connected
}

func (j *job) update(f func()) {
	j.mu.Lock()
	f()
	close(j.changed)
	j.changed = make(chan struct{})
	j.mu.Unlock()
}

// queue runs one model's jobs one at a time, in order.
type queue struct {
	mu       sync.Mutex
	waiting  []*job
	running  *job
	draining bool
}

var errQueueFull = errors.New("igpt serve: this model's queue is full; try again when a completion has finished")

func (s *Server) queueFor(model string) *queue {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q := s.queues[model]
	if q == nil {
		q = &queue{}
		s.queues[model] = q
	}
	return q
}

// enqueue adds j to its model's queue and starts the queue's one runner
// when none is running.
func (s *Server) enqueue(model string, j *job) error {
	q := s.queueFor(model)
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) >= s.opt.MaxQueue {
		return errQueueFull
	}
	q.waiting = append(q.waiting, j)
	pos := len(q.waiting)
	if q.running == nil && !q.draining {
		pos = 1
	}
	j.update(func() { j.position, j.state = pos, "queued" })
	if !q.draining {
		q.draining = true
		go s.drain(q)
	}
	return nil
}

// drain runs the queue's jobs in order until it is empty.
func (s *Server) drain(q *queue) {
	for {
		q.mu.Lock()
		if len(q.waiting) == 0 {
			q.running, q.draining = nil, false
			q.mu.Unlock()
			return
		}
		j := q.waiting[0]
		q.waiting = q.waiting[1:]
		q.running = j
		for i, w := range q.waiting {
			w.update(func() { w.position = i + 1 })
		}
		q.mu.Unlock()
		s.runJob(j)
	}
}

func (s *Server) runJob(j *job) {
	defer j.cancel()
	if j.ctx.Err() != nil {
		j.update(func() {
			j.state, j.err, j.position = "error", "cancelled while queued: "+context.Cause(j.ctx).Error(), 0
		})
		return
	}
	j.update(func() { j.state, j.position, j.started = "running", 0, time.Now() })
	if s.beforeJob != nil {
		s.beforeJob(j.ctx, j.kind)
	}
	err := j.work(j.ctx, j)
	j.update(func() {
		j.finished = time.Now()
		if err != nil {
			j.state, j.err = "error", err.Error()
		} else {
			j.state = "done"
		}
	})
	if err != nil {
		s.log.Info("igpt serve: job ended", "id", j.id, "kind", j.kind, "err", err)
	} else if j.kind == "complete" {
		j.mu.Lock()
		ttft, el := j.first.Sub(j.started), j.finished.Sub(j.started)
		rate := float64(j.total*len(j.toks)) / el.Seconds()
		j.mu.Unlock()
		s.log.Info("igpt serve: completion done", "id", j.id, "first_token", ttft, "tokens_per_s", rate)
	}
}

// jobTable holds jobs by id for their event streams; finished jobs are
// dropped a while after they end.
type jobTable struct {
	mu sync.Mutex
	m  map[string]*job
}

func (t *jobTable) add(j *job) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, o := range t.m {
		o.mu.Lock()
		old := !o.finished.IsZero() && time.Since(o.finished) > 10*time.Minute
		o.mu.Unlock()
		if old {
			delete(t.m, id)
		}
	}
	t.m[j.id] = j
}

func (t *jobTable) get(id string) *job {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

// newJob makes a job bounded by the job timeout; a watchdog cancels it
// once nobody has watched it for abandonAfter.
func (s *Server) newJob(kind string, work func(context.Context, *job) error) *job {
	ctx, cancel := context.WithTimeout(context.Background(), s.opt.JobTimeout)
	j := &job{id: NewToken()[:16], kind: kind, ctx: ctx, cancel: cancel, work: work, changed: make(chan struct{}),
		created: time.Now(), seen: time.Now(), state: "queued"}
	return j
}

func (s *Server) watchdog(j *job) {
	t := time.NewTicker(min(time.Second, s.abandonAfter/4))
	defer t.Stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-t.C:
			j.mu.Lock()
			gone := j.watchers == 0 && time.Since(j.seen) > s.abandonAfter
			j.mu.Unlock()
			if gone {
				s.log.Info("igpt serve: nobody watches the job any more: cancelled", "id", j.id)
				j.cancel()
				return
			}
		}
	}
}

// trainedOutput finds a finished train output by key.
func (s *Server) trainedOutput(ctx context.Context, key string) (*stages.Manifest, error) {
	if !stageKeyRE.MatchString(key) {
		return nil, fmt.Errorf("igpt serve: %q is not a train key", key)
	}
	m, err := stages.ReadManifest(ctx, storage.Join(s.root, "train", key))
	if err != nil {
		return nil, fmt.Errorf("igpt serve: train/%s is not a finished train output: %w", key, err)
	}
	return m, nil
}

func formFloat(r *http.Request, name string, def, lo, hi float64) (float64, error) {
	v := r.FormValue(name)
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= lo && f <= hi) {
		return 0, fmt.Errorf("igpt serve: %s=%q: want a number in [%g, %g]", name, v, lo, hi)
	}
	return f, nil
}

// handleComplete queues a completion: of an uploaded picture (field
// picture) or of test image test=I, keeping keep of its rows, n times.
// It answers the job id and queue position; /api/jobs/ID streams it.
func (s *Server) handleComplete(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxUploadBytes+1<<20)
	if err := r.ParseMultipartForm(1 << 20); err != nil {
		code := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			code = http.StatusRequestEntityTooLarge
			err = fmt.Errorf("igpt serve: the upload is over %d bytes: send a smaller PNG or JPEG", maxUploadBytes)
		}
		s.httpError(w, r, code, err)
		return
	}
	defer r.MultipartForm.RemoveAll()
	bad := func(err error) { s.httpError(w, r, http.StatusBadRequest, err) }
	tm, err := s.trainedOutput(r.Context(), r.FormValue("run"))
	if err != nil {
		bad(err)
		return
	}
	keep, err := formFloat(r, "keep", 0.5, 0.01, 0.99)
	if err != nil {
		bad(err)
		return
	}
	temp, err := formFloat(r, "temperature", 1, 0.01, 10)
	if err != nil {
		bad(err)
		return
	}
	topK, err := formFloat(r, "top_k", 0, 0, 1<<16)
	if err != nil {
		bad(err)
		return
	}
	n, err := formFloat(r, "n", 1, 1, maxCompletions)
	if err != nil {
		bad(err)
		return
	}
	seed, err := formFloat(r, "seed", 0, 0, 1<<31)
	if err != nil {
		bad(err)
		return
	}
	var picture []byte
	test := -1
	if f, hdr, err := r.FormFile("picture"); err == nil {
		defer f.Close()
		if hdr.Size > maxUploadBytes {
			s.httpError(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("igpt serve: %s is %d bytes, over the %d allowed: send a smaller picture", hdr.Filename, hdr.Size, maxUploadBytes))
			return
		}
		if picture, err = io.ReadAll(io.LimitReader(f, maxUploadBytes)); err != nil {
			bad(err)
			return
		}
		// The header's size first, before queueing: a small file can
		// claim 100000×100000 pixels.
		cfg, format, err := image.DecodeConfig(bytes.NewReader(picture))
		if err != nil {
			bad(fmt.Errorf("igpt serve: %s is not a readable PNG or JPEG: %w", hdr.Filename, err))
			return
		}
		if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > stages.MaxPicturePixels {
			s.httpError(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("igpt serve: %s's %s header claims %d×%d pixels; at most %d are read: shrink it first",
				hdr.Filename, format, cfg.Width, cfg.Height, stages.MaxPicturePixels))
			return
		}
	} else {
		t, err := formFloat(r, "test", 0, 0, 63)
		if err != nil {
			bad(err)
			return
		}
		test = int(t)
	}
	opt := model.SampleOptions{Temperature: temp, TopK: int(topK), Seed: uint64(seed)}
	j := s.newJob("complete", func(ctx context.Context, j *job) error {
		return s.complete(ctx, j, tm, picture, test, keep, int(n), opt)
	})
	s.jobs.add(j)
	if err := s.enqueue(tm.Key, j); err != nil {
		j.cancel()
		s.httpError(w, r, http.StatusTooManyRequests, err)
		return
	}
	go s.watchdog(j)
	j.mu.Lock()
	pos := j.position
	j.mu.Unlock()
	writeJSON(w, map[string]any{"job": j.id, "position": pos, "events": "/api/jobs/" + j.id})
}

// complete runs in the model's queue: it opens the model, encodes the
// picture (or reads the test image) and samples, publishing the tokens
// after every position.
func (s *Server) complete(ctx context.Context, j *job, tm *stages.Manifest, picture []byte, test int, keep float64, n int, opt model.SampleOptions) error {
	tr, err := s.openModel(ctx, tm, "")
	if err != nil {
		return err
	}
	var img records.Tokens
	if picture != nil {
		if img, err = tr.EncodePicture(picture); err != nil {
			return err
		}
	} else {
		imgs, err := stages.TestImages(ctx, tr.Tokens, test+1)
		if err != nil {
			return err
		}
		if test >= len(imgs) {
			return fmt.Errorf("igpt serve: the test split has %d images, no image %d", len(imgs), test)
		}
		img = imgs[test]
	}
	T := tr.Model.Config.Seq
	if err := stages.CheckGrid([]records.Tokens{img}, tr.H, tr.W, tr.Codec.Vocab()); err != nil {
		return err
	}
	P := max(1, int(float64(tr.H)*keep)) * tr.W
	P = min(P, T-1)
	prefix := make([]int32, 0, n*P)
	for c := 0; c < n; c++ {
		for _, v := range img.Tok[:P] {
			prefix = append(prefix, int32(v))
		}
	}
	j.update(func() {
		j.h, j.w, j.codec, j.prefix, j.total = tr.H, tr.W, tr.Codec, P, T-P
		j.toks = make([][]uint16, n)
		for c := range j.toks {
			j.toks[c] = append([]uint16(nil), img.Tok[:P]...)
		}
	})
	smp, err := model.NewSampler(tr.Model, n)
	if err != nil {
		return err
	}
	defer smp.Close()
	_, err = smp.SampleEach(prefix, T, opt, func(t int, out []int32) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("igpt serve: completion stopped: %w", context.Cause(ctx))
		}
		j.update(func() {
			if j.first.IsZero() {
				j.first = time.Now()
			}
			for c := range j.toks {
				j.toks[c] = append(j.toks[c], uint16(out[c*T+t]))
			}
			j.done = t + 1 - P
		})
		if s.afterToken != nil {
			s.afterToken(t+1-P, T-P)
		}
		return nil
	})
	return err
}

// openModel opens a train output's model (final or a checkpoint).
func (s *Server) openModel(ctx context.Context, tm *stages.Manifest, ckpt string) (*stages.TrainedModel, error) {
	return stages.OpenTrained(ctx, tm, ckpt)
}

// jobSnapshot is what a job's stream sends.
type jobSnapshot struct {
	State     string   `json:"state"`
	Position  int      `json:"position"`
	Error     string   `json:"error,omitempty"`
	Done      int      `json:"done"`
	Total     int      `json:"total"`
	Images    []string `json:"images,omitempty"` // data: URLs, one per completion
	FirstMS   float64  `json:"first_token_ms,omitempty"`
	TokensPS  float64  `json:"tokens_per_s,omitempty"`
	ElapsedMS float64  `json:"elapsed_ms,omitempty"`
}

func (j *job) snapshot(withImages bool) jobSnapshot {
	j.mu.Lock()
	defer j.mu.Unlock()
	sn := jobSnapshot{State: j.state, Position: j.position, Error: j.err, Done: j.done, Total: j.total}
	if !j.first.IsZero() {
		sn.FirstMS = float64(j.first.Sub(j.started).Microseconds()) / 1000
	}
	if !j.started.IsZero() {
		end := j.finished
		if end.IsZero() {
			end = time.Now()
		}
		el := end.Sub(j.started)
		sn.ElapsedMS = float64(el.Microseconds()) / 1000
		if j.done > 0 {
			sn.TokensPS = float64(j.done*len(j.toks)) / el.Seconds()
		}
	}
	if withImages && j.codec != nil {
		for _, t := range j.toks {
			if b, err := partialPNG(j.codec, t, j.h, j.w, 4); err == nil {
				sn.Images = append(sn.Images, "data:image/png;base64,"+base64.StdEncoding.EncodeToString(b))
			}
		}
	}
	return sn
}

// partialPNG decodes the tokens so far (the rest padded with token 0) and
// greys the pixels of the tokens not yet drawn.
func partialPNG(codec stages.Codec, toks []uint16, h, w, scale int) ([]byte, error) {
	full := make([]uint16, h*w)
	copy(full, toks)
	rgb, err := codec.Decode(full, h, w)
	if err != nil {
		return nil, err
	}
	f := codec.Factor()
	ph, pw := h*f, w*f
	img := image.NewRGBA(image.Rect(0, 0, pw*scale, ph*scale))
	for y := 0; y < ph; y++ {
		for x := 0; x < pw; x++ {
			c := color.RGBA{128, 128, 128, 255}
			if (y/f)*w+x/f < len(toks) {
				i := 3 * (y*pw + x)
				c = color.RGBA{rgb[i], rgb[i+1], rgb[i+2], 255}
			}
			for dy := 0; dy < scale; dy++ {
				for dx := 0; dx < scale; dx++ {
					img.SetRGBA(x*scale+dx, y*scale+dy, c)
				}
			}
		}
	}
	var buf bytes.Buffer
	err = png.Encode(&buf, img)
	return buf.Bytes(), err
}

// minFrame is the shortest gap between two streamed pictures of a job.
const minFrame = 50 * time.Millisecond

// handleJobEvents streams a job: "queue" events while it waits (its
// position), "tokens" as tokens arrive (at most one per minFrame, with the
// pictures so far), then "done" or "error". Writes have deadlines; the
// job itself never waits for this stream.
func (s *Server) handleJobEvents(w http.ResponseWriter, r *http.Request) {
	j := s.jobs.get(r.PathValue("id"))
	if j == nil {
		http.Error(w, "igpt serve: no such job (finished jobs are kept 10 minutes)", http.StatusNotFound)
		return
	}
	j.mu.Lock()
	j.watchers++
	j.seen = time.Now()
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		j.watchers--
		j.seen = time.Now()
		j.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(r.Context(), s.opt.JobTimeout+time.Minute)
	defer cancel()
	ev := newSSE(w)
	lastPos, lastDone := -1, -1
	for {
		j.mu.Lock()
		changed := j.changed
		j.mu.Unlock()
		sn := j.snapshot(false)
		switch {
		case sn.State == "done" || sn.State == "error":
			full := j.snapshot(true)
			ev.send("tokens", full)
			ev.send(sn.State, full)
			return
		case sn.State == "queued" && sn.Position != lastPos:
			if ev.send("queue", sn) != nil {
				return
			}
			lastPos = sn.Position
		case sn.State == "running" && sn.Done != lastDone:
			if ev.send("tokens", j.snapshot(true)) != nil {
				return
			}
			lastDone = sn.Done
			select { // at most one picture per frame
			case <-ctx.Done():
				return
			case <-time.After(minFrame):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(keepAlive):
			if ev.comment() != nil {
				return
			}
		}
	}
}

var ckptRE = regexp.MustCompile(`^step-[0-9]{8}$`)

// handleSteps lists a finished train output's kept checkpoints.
func (s *Server) handleSteps(w http.ResponseWriter, r *http.Request) {
	tm, err := s.trainedOutput(r.Context(), r.PathValue("key"))
	if err != nil {
		s.httpError(w, r, http.StatusNotFound, err)
		return
	}
	ents, err := s.ls.list(r.Context(), storage.Join(tm.Dir, stages.CheckpointDir))
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, err)
		return
	}
	steps := []map[string]any{}
	for _, e := range ents {
		if e.dir && ckptRE.MatchString(e.name) {
			n, _ := strconv.Atoi(e.name[len("step-"):])
			steps = append(steps, map[string]any{"checkpoint": e.name, "step": n})
		}
	}
	writeJSON(w, steps)
}

// Checkpoint pictures: stepImages samples and completes stepTestImages
// test images, with a fixed seed, so every checkpoint draws the same.
const (
	stepImages     = 4
	stepTestImages = 4
	stepSeed       = 1
	maxImgCache    = 256
)

// handleStepImage draws, from one kept checkpoint, unconditional samples
// (kind samples) or half-image completions of the first test images (kind
// completions), on demand, through the model's queue, cached in memory.
func (s *Server) handleStepImage(w http.ResponseWriter, r *http.Request) {
	key, ckpt, kind := r.PathValue("key"), r.PathValue("ckpt"), r.PathValue("kind")
	if !ckptRE.MatchString(ckpt) || (kind != "samples.png" && kind != "completions.png") {
		s.httpError(w, r, http.StatusNotFound, fmt.Errorf("igpt serve: no picture %s/%s (want step-NNNNNNNN/samples.png or completions.png)", ckpt, kind))
		return
	}
	tm, err := s.trainedOutput(r.Context(), key)
	if err != nil {
		s.httpError(w, r, http.StatusNotFound, err)
		return
	}
	ck := key + "/" + ckpt + "/" + kind
	s.imgMu.Lock()
	b, ok := s.imgCache[ck]
	s.imgMu.Unlock()
	if !ok {
		j := s.newJob("step-image", func(ctx context.Context, j *job) error {
			var err error
			b, err = s.stepImage(ctx, tm, ckpt, kind)
			return err
		})
		j.watchers = 1 // the request waits for it
		ctx := r.Context()
		stop := context.AfterFunc(ctx, j.cancel) // a client that leaves frees its place
		defer stop()
		j.mu.Lock()
		wait := j.changed
		j.mu.Unlock()
		if err := s.enqueue(key, j); err != nil {
			j.cancel()
			s.httpError(w, r, http.StatusTooManyRequests, err)
			return
		}
		for {
			sn := j.snapshot(false)
			if sn.State == "done" {
				break
			}
			if sn.State == "error" {
				s.httpError(w, r, http.StatusInternalServerError, errors.New(sn.Error))
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-wait:
			}
			j.mu.Lock()
			wait = j.changed
			j.mu.Unlock()
		}
		s.imgMu.Lock()
		if len(s.imgCache) >= maxImgCache {
			for k := range s.imgCache {
				delete(s.imgCache, k)
				break
			}
		}
		s.imgCache[ck] = b
		s.imgMu.Unlock()
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "private, max-age=3600")
	w.Write(b)
}

func (s *Server) stepImage(ctx context.Context, tm *stages.Manifest, ckpt, kind string) ([]byte, error) {
	tr, err := s.openModel(ctx, tm, ckpt)
	if err != nil {
		return nil, err
	}
	opt := model.SampleOptions{Temperature: 1, Seed: stepSeed}
	if kind == "completions.png" {
		imgs, err := stages.TestImages(ctx, tr.Tokens, stepTestImages)
		if err != nil {
			return nil, err
		}
		png, _, err := stages.Complete(tr.Model, imgs, 1, 0.5, opt, tr.Codec, 4)
		return png, err
	}
	T := tr.Model.Config.Seq
	toks, err := tr.Model.Sample(nil, stepImages, T, opt)
	if err != nil {
		return nil, err
	}
	f := tr.Codec.Factor()
	row := make([]imgproc.Tile, 0, stepImages)
	for b := 0; b < stepImages; b++ {
		t := make([]uint16, T)
		for i := range t {
			t[i] = uint16(toks[b*T+i])
		}
		rgb, err := tr.Codec.Decode(t, tr.H, tr.W)
		if err != nil {
			return nil, err
		}
		row = append(row, imgproc.Tile{RGB: rgb})
	}
	return imgproc.Grid{TileH: tr.H * f, TileW: tr.W * f, Scale: 4, Gap: 4}.PNG([][]imgproc.Tile{row})
}
