package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/stages"
)

// stageOrder is the order a chain is shown in, download first.
var stageOrder = []string{"download", "palette", "quantize", "vqvae-train", "vqvae-encode", "train",
	"probe-baselines", "probe", "sample", "finetune"}

func stageRank(s string) int {
	if i := slices.Index(stageOrder, s); i >= 0 {
		return i
	}
	return len(stageOrder)
}

// trainingStages write metrics.jsonl while they run.
var trainingStages = map[string]bool{"train": true, "vqvae-train": true, "finetune": true}

// maxMetricsBytes caps the metrics.jsonl the server reads (a run of a
// million steps writes about 200 MB; a page cannot draw more anyway).
const maxMetricsBytes = 64 << 20

func (s *Server) handleOverview(w http.ResponseWriter, r *http.Request) {
	ix, err := s.scan(r.Context())
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Server-Timing", fmt.Sprintf("scan;dur=%.1f", float64(ix.Took.Microseconds())/1000))
	if err := s.tmpl.ExecuteTemplate(w, "overview.html", map[string]any{"Root": s.root, "Index": ix}); err != nil {
		s.log.Warn("igpt serve: overview", "err", err)
	}
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	ix, err := s.scan(r.Context())
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, map[string]any{"root": s.root, "outputs": ix.Outputs, "scan_ms": float64(ix.Took.Microseconds()) / 1000})
}

// ref reads and checks the stage and key of a request's path.
func ref(r *http.Request) (Ref, error) {
	rf := Ref{r.PathValue("stage"), r.PathValue("key")}
	if !stageNameRE.MatchString(rf.Stage) || !stageKeyRE.MatchString(rf.Key) {
		return rf, fmt.Errorf("igpt serve: %q is not a stage name and key (STAGE/0123456789ab)", rf.String())
	}
	return rf, nil
}

func (s *Server) handleRunPage(w http.ResponseWriter, r *http.Request) {
	rf, err := ref(r)
	if err != nil {
		s.httpError(w, r, http.StatusNotFound, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.tmpl.ExecuteTemplate(w, "run.html", map[string]any{"Root": s.root, "Ref": rf}); err != nil {
		s.log.Warn("igpt serve: run page", "err", err)
	}
}

func (s *Server) handleComparePage(w http.ResponseWriter, r *http.Request) {
	var refs []Ref
	for _, v := range r.URL.Query()["run"] {
		st, key, _ := strings.Cut(v, "/")
		if !stageNameRE.MatchString(st) || !stageKeyRE.MatchString(key) {
			s.httpError(w, r, http.StatusBadRequest, fmt.Errorf("igpt serve: run=%q is not STAGE/KEY", v))
			return
		}
		refs = append(refs, Ref{st, key})
	}
	if len(refs) < 2 || len(refs) > 6 {
		s.httpError(w, r, http.StatusBadRequest, fmt.Errorf("igpt serve: compare takes 2 to 6 runs (run=STAGE/KEY), got %d", len(refs)))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.tmpl.ExecuteTemplate(w, "compare.html", map[string]any{"Root": s.root, "Refs": refs}); err != nil {
		s.log.Warn("igpt serve: compare page", "err", err)
	}
}

// chainItem is one output of a run's chain as the run page draws it.
type chainItem struct {
	*Output
	Images     []string        `json:"images"`
	HasMetrics bool            `json:"has_metrics"`
	Report     json.RawMessage `json:"report,omitempty"`
	Total      int             `json:"total_steps,omitempty"`
}

// handleRun returns a run's chain: the output, every output upstream of it
// and every output downstream, in stage order.
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	rf, err := ref(r)
	if err != nil {
		s.httpError(w, r, http.StatusNotFound, err)
		return
	}
	ix, err := s.scan(r.Context())
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, err)
		return
	}
	self := ix.byRef[rf]
	if self == nil {
		s.httpError(w, r, http.StatusNotFound, fmt.Errorf("igpt serve: no stage output %s under %s", rf, s.root))
		return
	}
	seen := map[Ref]bool{}
	var chain []*Output
	var walk func(o *Output, up bool)
	walk = func(o *Output, up bool) {
		next := o.Downstream
		if up {
			next = o.Inputs
		}
		for _, n := range next {
			if m := ix.byRef[n]; m != nil && !seen[n] {
				seen[n] = true
				chain = append(chain, m)
				walk(m, up)
			}
		}
	}
	seen[rf] = true
	chain = append(chain, self)
	walk(self, true)
	walk(self, false)
	// The other inputs of what lies downstream (probe's baselines).
	for _, o := range slices.Clone(chain) {
		for _, in := range o.Inputs {
			if m := ix.byRef[in]; m != nil && !seen[in] {
				seen[in] = true
				chain = append(chain, m)
			}
		}
	}
	slices.SortStableFunc(chain, func(a, b *Output) int { return stageRank(a.Stage) - stageRank(b.Stage) })
	var items []chainItem
	for _, o := range chain {
		items = append(items, s.item(r.Context(), o))
	}
	writeJSON(w, map[string]any{"self": rf, "chain": items})
}

func (s *Server) item(ctx context.Context, o *Output) chainItem {
	it := chainItem{Output: o, Images: []string{}}
	if o.manifest != nil {
		for _, f := range o.manifest.Files {
			if strings.HasSuffix(f.Name, ".png") && storage.LocalName(f.Name) {
				it.Images = append(it.Images, fileURL(o.Ref, f.Name))
			}
			if f.Name == stages.MetricsFile {
				it.HasMetrics = true
			}
		}
		for _, name := range []string{stages.ReportJSON, stages.BaselinesFile} {
			if o.files[name] {
				if b, err := storage.ReadFile(ctx, o.manifest.Path(name)); err == nil && json.Valid(b) {
					it.Report = b
				}
			}
		}
	} else if trainingStages[o.Stage] {
		it.HasMetrics = true
	}
	var cfg struct {
		Steps int `json:"steps"`
	}
	if json.Unmarshal(o.Config, &cfg) == nil {
		it.Total = cfg.Steps
	}
	return it
}

func fileURL(rf Ref, name string) string {
	return "/file/" + rf.Stage + "/" + rf.Key + "/" + name
}

// resolveFile is the path of a file of a stage folder that may be served:
// one its manifest lists or, for a stage without a manifest (running), its
// metrics.jsonl or a PNG at its top; a name that stays inside the folder
// and, locally, a path whose symlinks resolve inside the root.
func (s *Server) resolveFile(ctx context.Context, rf Ref, name string) (string, error) {
	if !stageNameRE.MatchString(rf.Stage) || !stageKeyRE.MatchString(rf.Key) {
		return "", errNotServed
	}
	if !storage.LocalName(name) {
		return "", errNotServed
	}
	if _, ok := contentTypes[path.Ext(name)]; !ok {
		return "", errNotServed
	}
	dir := storage.Join(s.root, rf.Stage, rf.Key)
	m, err := stages.ReadManifest(ctx, dir)
	switch {
	case err == nil:
		if !slices.ContainsFunc(m.Files, func(f stages.FileInfo) bool { return f.Name == name }) {
			return "", errNotServed
		}
	case errors.Is(err, storage.ErrNotExist):
		if name != stages.MetricsFile && (path.Ext(name) != ".png" || strings.Contains(name, "/")) {
			return "", errNotServed
		}
		if ok, _ := storage.Exists(ctx, storage.Join(dir, name)); !ok {
			dir += ".attempt"
		}
	default:
		return "", err
	}
	p, err := storage.Within(dir, name)
	if err != nil {
		return "", errNotServed
	}
	if !insideRoot(s.root, p) {
		return "", errNotServed
	}
	return p, nil
}

var errNotServed = errors.New("igpt serve: not a file of a stage output under the root")

var contentTypes = map[string]string{
	".png": "image/png", ".json": "application/json", ".jsonl": "application/x-ndjson",
	".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
}

func (s *Server) handleFile(w http.ResponseWriter, r *http.Request) {
	rf := Ref{r.PathValue("stage"), r.PathValue("key")}
	name := r.PathValue("name")
	p, err := s.resolveFile(r.Context(), rf, name)
	if err != nil {
		code := http.StatusNotFound
		if !errors.Is(err, errNotServed) {
			code = http.StatusInternalServerError
		}
		s.httpError(w, r, code, err)
		return
	}
	var rc io.ReadCloser
	if storage.IsGCS(p) {
		rc, err = storage.Open(r.Context(), p)
	} else {
		rc, err = os.Open(p)
	}
	if err != nil {
		s.httpError(w, r, http.StatusNotFound, fmt.Errorf("igpt serve: %s: %w", name, err))
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", contentTypes[path.Ext(name)])
	w.Header().Set("Cache-Control", "no-cache")
	io.Copy(w, rc)
}

// readMetrics reads the lines of a stage's metrics.jsonl up to the first
// that does not parse (a line being written), each as raw JSON.
func (s *Server) readMetrics(ctx context.Context, rf Ref) ([]json.RawMessage, error) {
	p, err := s.resolveFile(ctx, rf, stages.MetricsFile)
	if err != nil {
		return nil, err
	}
	if n, err := storage.Size(ctx, p); err != nil {
		return nil, err
	} else if n > maxMetricsBytes {
		return nil, fmt.Errorf("igpt serve: %s is %d bytes, more than the %d this page reads", p, n, maxMetricsBytes)
	}
	b, err := storage.ReadFile(ctx, p)
	if err != nil {
		return nil, err
	}
	out := []json.RawMessage{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) || line[0] != '{' {
			break
		}
		out = append(out, json.RawMessage(bytes.Clone(line)))
	}
	return out, nil
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	rf, err := ref(r)
	if err != nil {
		s.httpError(w, r, http.StatusNotFound, err)
		return
	}
	lines, err := s.readMetrics(r.Context(), rf)
	if errors.Is(err, storage.ErrNotExist) || errors.Is(err, errNotServed) {
		lines, err = []json.RawMessage{}, nil
	}
	if err != nil {
		s.httpError(w, r, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, lines)
}
