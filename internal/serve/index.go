package serve

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/stages"
	"golang.org/x/sync/errgroup"
)

// Names a URL or a listing may use for a stage folder: the stage contract's
// (see stages' checkNames).
var (
	stageNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	stageKeyRE  = regexp.MustCompile(`^[0-9a-f]{12}$`)
)

// States of a stage output.
const (
	stateDone      = "done"
	stateRunning   = "running"
	stateFailed    = "failed"     // started (RunningFile) or partial, no manifest, no lock
	stateStale     = "stale lock" // a lock no live run refreshes
	stateRerunning = "done, rerunning"
)

// lockStaleAfter is storage's default: a lock not refreshed for this long
// belongs to no live run.
const lockStaleAfter = 5 * time.Minute

// Ref names a stage output.
type Ref struct {
	Stage string `json:"stage"`
	Key   string `json:"key"`
}

func (r Ref) String() string { return r.Stage + "/" + r.Key }

// Output is one stage output under the root, as the overview shows it.
type Output struct {
	Ref
	State      string            `json:"state"`
	Started    time.Time         `json:"started,omitzero"`
	Finished   time.Time         `json:"finished,omitzero"`
	Elapsed    string            `json:"elapsed,omitempty"`
	Headline   string            `json:"headline"`
	Config     json.RawMessage   `json:"config,omitempty"`
	Inputs     []Ref             `json:"inputs"`
	Downstream []Ref             `json:"downstream"`
	Lock       *storage.LockInfo `json:"lock,omitempty"`

	dir      string           // <root>/<stage>/<key>
	workDir  string           // where a run without a manifest writes (dir or dir.attempt)
	manifest *stages.Manifest // nil unless done
	files    map[string]bool  // names the manifest lists
	err      error            // why the manifest could not be read
}

// Index is every stage output under a root at one moment.
type Index struct {
	Outputs []*Output
	byRef   map[Ref]*Output
	Took    time.Duration
}

// Get returns the output of a stage and key.
func (ix *Index) Get(stage, key string) *Output { return ix.byRef[Ref{stage, key}] }

// headlineCache keeps headlines (a probe's reads its report) by manifest
// folder and finish time: a rerun writes a new finish time.
type headlineCache struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *headlineCache) get(ctx context.Context, m *stages.Manifest) string {
	k := m.Dir + "@" + m.Finished.String()
	c.mu.Lock()
	h, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return h
	}
	h = stages.Headline(ctx, m)
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[k] = h
	c.mu.Unlock()
	return h
}

// scan lists the root two levels deep (stages, then keys and locks) and
// reads each output's manifest, lock or running marker, 16 at a time.
func (s *Server) scan(ctx context.Context) (*Index, error) {
	start := time.Now()
	top, err := s.ls.list(ctx, s.root)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	ix := &Index{byRef: map[Ref]*Output{}}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, st := range top {
		if !st.dir || !stageNameRE.MatchString(st.name) {
			continue
		}
		stage := st.name
		g.Go(func() error {
			ents, err := s.ls.list(gctx, storage.Join(s.root, stage))
			if err != nil {
				return err
			}
			keys := map[string]*Output{}
			get := func(key string) *Output {
				o := keys[key]
				if o == nil {
					dir := storage.Join(s.root, stage, key)
					o = &Output{Ref: Ref{stage, key}, dir: dir, workDir: dir}
					keys[key] = o
				}
				return o
			}
			locks := map[string]entry{}
			attempts := map[string]bool{}
			for _, e := range ents {
				base, suffix, _ := strings.Cut(e.name, ".")
				if !stageKeyRE.MatchString(base) {
					continue
				}
				switch {
				case e.dir && suffix == "":
					get(base)
				case e.dir && suffix == "attempt":
					attempts[base] = true
					get(base)
				case !e.dir && suffix == "lock":
					locks[base] = e
					get(base)
				}
			}
			for key, o := range keys {
				lock, hasLock := locks[key]
				hasAttempt := attempts[key]
				g.Go(func() error {
					s.fill(gctx, o, lock, hasLock, hasAttempt)
					mu.Lock()
					ix.Outputs = append(ix.Outputs, o)
					ix.byRef[o.Ref] = o
					mu.Unlock()
					return nil
				})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, o := range ix.Outputs {
		for _, in := range o.Inputs {
			if u := ix.byRef[in]; u != nil {
				u.Downstream = append(u.Downstream, o.Ref)
			}
		}
	}
	sort.Slice(ix.Outputs, func(i, j int) bool {
		a, b := ix.Outputs[i], ix.Outputs[j]
		if a.Stage != b.Stage {
			return a.Stage < b.Stage
		}
		return a.Finished.After(b.Finished) || (a.Finished.Equal(b.Finished) && a.Key < b.Key)
	})
	for _, o := range ix.Outputs {
		sort.Slice(o.Downstream, func(i, j int) bool { return o.Downstream[i].String() < o.Downstream[j].String() })
	}
	ix.Took = time.Since(start)
	return ix, nil
}

// fill reads one output's manifest (done), or its lock and running marker.
func (s *Server) fill(ctx context.Context, o *Output, lock entry, hasLock, hasAttempt bool) {
	o.Inputs, o.Downstream = []Ref{}, []Ref{}
	m, err := stages.ReadManifest(ctx, o.dir)
	switch {
	case err == nil:
		o.manifest = m
		o.State = stateDone
		o.Started, o.Finished = m.Started, m.Finished
		o.Elapsed = m.Finished.Sub(m.Started).Round(100 * time.Millisecond).String()
		o.Config = m.Config
		o.files = map[string]bool{}
		for _, f := range m.Files {
			o.files[f.Name] = true
		}
		for _, in := range m.Inputs {
			o.Inputs = append(o.Inputs, Ref{in.Stage, in.Key})
		}
		o.Headline = s.headlines.get(ctx, m)
	case errors.Is(err, storage.ErrNotExist):
		o.State = stateFailed
		o.Headline = "-"
	default:
		o.State = stateFailed
		o.err = err
		o.Headline = "unreadable manifest: " + err.Error()
	}
	if hasLock {
		info, live := s.readLock(ctx, o, lock)
		o.Lock = info
		switch {
		case live && o.State == stateDone:
			o.State = stateRerunning
		case live:
			o.State = stateRunning
		case o.State != stateDone:
			o.State = stateStale
		}
	}
	if o.manifest == nil || o.State == stateRerunning {
		// A run without a manifest writes into the folder (resuming
		// stages) or into the attempt folder beside it (the rest, --force).
		if hasAttempt {
			o.workDir = o.dir + ".attempt"
		}
		if b, err := storage.ReadFile(ctx, storage.Join(o.workDir, stages.RunningFile)); err == nil {
			var r stages.Running
			if json.Unmarshal(b, &r) == nil {
				o.Started = r.Started
				if o.manifest == nil {
					o.Config = r.Config
				}
			}
		}
	}
}

// readLock reads a stage lock and tells whether a live run holds it: a
// lock refreshed within lockStaleAfter whose holder, on this host, is a
// live process.
func (s *Server) readLock(ctx context.Context, o *Output, e entry) (*storage.LockInfo, bool) {
	b, err := storage.ReadFile(ctx, o.dir+".lock")
	if err != nil {
		return nil, false
	}
	var info storage.LockInfo
	if json.Unmarshal(b, &info) != nil || info.PID <= 0 || info.Host == "" {
		return nil, false // garbled: stale, as storage treats it
	}
	if !e.mod.IsZero() && s.now().Sub(e.mod) > lockStaleAfter {
		return &info, false
	}
	if info.Host == s.host && !processAlive(info.PID) {
		return &info, false
	}
	return &info, true
}
