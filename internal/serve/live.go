package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/stages"
)

// Bounds of a server-sent event stream: the longest one lasts (the page's
// EventSource reconnects), how long one write may take (a client that
// stops reading is dropped), and the keep-alive interval.
const (
	maxStream    = time.Hour
	writeTimeout = 10 * time.Second
	keepAlive    = 15 * time.Second
)

// sse writes server-sent events with a deadline on each write.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newSSE(w http.ResponseWriter) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, rc: http.NewResponseController(w)}
}

func (e *sse) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	e.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	return e.rc.Flush()
}

func (e *sse) comment() error {
	e.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := fmt.Fprint(e.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	return e.rc.Flush()
}

// progress is a running stage's place: its last step, the total its
// config asks for, and the time left at the pace of its last lines.
type progress struct {
	Step       int     `json:"step"`
	Total      int     `json:"total,omitempty"`
	Percent    float64 `json:"percent,omitempty"`
	ETASeconds float64 `json:"eta_s,omitempty"`
	Checkpoint string  `json:"checkpoint,omitempty"`
	Lines      int     `json:"lines"`
}

// handleEvents streams a stage output's metrics while it runs: "metrics"
// events carry the lines added since the last one (or all of them, with
// reset, when the file was rewritten shorter), "progress" the step, total
// and ETA, "done" the end (the manifest appeared), after which the stream
// closes. A finished output gets its lines and "done" at once.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	rf, err := ref(r)
	if err != nil {
		s.httpError(w, r, http.StatusNotFound, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), maxStream)
	defer cancel()
	ev := newSSE(w)
	dir := storage.Join(s.root, rf.Stage, rf.Key)
	sent := 0
	var lastSize int64 = -1
	var lastMod time.Time
	lastCkpt := ""
	tick := time.NewTicker(s.opt.Poll)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		done := false
		if _, err := stages.ReadManifest(ctx, dir); err == nil {
			done = true
		}
		// The metrics file and the newest checkpoint, from one listing
		// of each folder the run may write.
		size, mod, ckpt := int64(-1), time.Time{}, ""
		for _, d := range []string{dir, dir + ".attempt"} {
			ents, _ := s.ls.list(ctx, d)
			for _, e := range ents {
				if e.name == stages.MetricsFile && !e.dir && size < 0 {
					size, mod = e.size, e.mod
				}
			}
			if size >= 0 {
				if b, err := storage.ReadFile(ctx, storage.Join(d, stages.CheckpointDir, stages.LatestFile)); err == nil {
					ckpt = strings.TrimSpace(string(b))
				}
				break
			}
		}
		if size >= 0 && (size != lastSize || !mod.Equal(lastMod) || done) {
			lastSize, lastMod = size, mod
			lines, err := s.readMetrics(ctx, rf)
			if err == nil {
				reset := len(lines) < sent
				if reset {
					sent = 0
				}
				if len(lines) > sent || reset {
					if ev.send("metrics", map[string]any{"lines": lines[sent:], "reset": reset}) != nil {
						return
					}
					sent = len(lines)
					lastWrite = time.Now()
				}
				p := s.progressOf(ctx, rf, lines)
				p.Checkpoint = ckpt
				if ckpt != lastCkpt || len(lines) > 0 {
					lastCkpt = ckpt
					if ev.send("progress", p) != nil {
						return
					}
				}
			} else if !errors.Is(err, storage.ErrNotExist) && !errors.Is(err, errNotServed) {
				s.log.Debug("igpt serve: metrics not read", "run", rf, "err", err)
			}
		}
		if done {
			ev.send("done", map[string]any{"lines": sent})
			return
		}
		if time.Since(lastWrite) > keepAlive {
			if ev.comment() != nil {
				return
			}
			lastWrite = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// progressOf reads the run's step total from its config (manifest, or the
// running marker) and the pace from its last metrics lines.
func (s *Server) progressOf(ctx context.Context, rf Ref, lines []json.RawMessage) progress {
	p := progress{Lines: len(lines)}
	if len(lines) == 0 {
		return p
	}
	var last struct {
		Step     int     `json:"step"`
		ElapsedS float64 `json:"elapsed_s"`
	}
	json.Unmarshal(lines[len(lines)-1], &last)
	p.Step = last.Step
	dir := storage.Join(s.root, rf.Stage, rf.Key)
	var cfg json.RawMessage
	if m, err := stages.ReadManifest(ctx, dir); err == nil {
		cfg = m.Config
	} else {
		for _, d := range []string{dir, dir + ".attempt"} {
			if b, err := storage.ReadFile(ctx, storage.Join(d, stages.RunningFile)); err == nil {
				var run stages.Running
				if json.Unmarshal(b, &run) == nil {
					cfg = run.Config
					break
				}
			}
		}
	}
	var c struct {
		Steps int `json:"steps"`
	}
	if json.Unmarshal(cfg, &c) == nil && c.Steps > 0 {
		p.Total = c.Steps
		p.Percent = 100 * float64(p.Step) / float64(c.Steps)
		if p.Step > 0 && last.ElapsedS > 0 && c.Steps > p.Step {
			p.ETASeconds = last.ElapsedS / float64(p.Step) * float64(c.Steps-p.Step)
		}
	}
	return p
}
