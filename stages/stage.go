// Package stages holds igpt's stage contract, the stage registry, the
// planner that runs a config's stages in order, skipping finished ones, and
// the stages themselves: one file per stage with its params type (defaults
// and checks beside it), its Run, and the typed reader of its output, so a
// consumer never reads another stage's manifest meta by string key or its
// config. Config loading checks every value before any stage runs, naming
// keys as the YAML writes them.
//
// A stage has a name, a version, a config section and upstream stages. Its
// key is the first 12 hex digits of sha256(name, version, canonical config
// JSON, upstream keys); its outputs go to <root>/<stage>/<key>/ and
// _MANIFEST.json is written there last: by a Beam stage's job, in its
// finish step (finish.go), so the stage is finished however the job was
// launched; by the driver for the others. A manifest's presence means done.
package stages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/igpt/igpt/internal/storage"
)

// Stage is one rerunnable step of the workflow.
type Stage interface {
	// Name is the stage's name, also its output folder under the root.
	Name() string
	// Version is bumped whenever the meaning of the stage's output changes.
	Version() int
	// Upstream names the stages whose outputs this one reads under cfg
	// (train reads quantize or vqvae-encode, as cfg's tokens: says).
	Upstream(cfg *Config) []string
	// Params returns the part of cfg that determines this stage's output;
	// it is hashed into the key and stored in the manifest.
	Params(cfg *Config) any
	// Run computes the outputs into rc.Dir and describes them. The driver
	// writes the manifest afterwards, unless the stage's job wrote it
	// (Output.Manifest: see stages/finish.go).
	Run(ctx context.Context, rc *RunContext) (*Output, error)
}

// Resumable is implemented by stages that continue an interrupted run from
// what they left in their folder (the train stage's checkpoints) instead of
// starting clean; --force still starts them clean.
type Resumable interface {
	Resumable() bool
}

// RunContext is what a stage's Run receives.
type RunContext struct {
	Config *Config
	Key    string
	Dir    string               // <root>/<stage>/<key>
	Inputs map[string]*Manifest // upstream manifests by stage name
	Runner string               // Beam runner name
	Log    *slog.Logger

	// GraphBytes is set by runPipeline: the size of the stage's Beam job
	// graph (its pipeline proto), written to the manifest as graph_bytes.
	GraphBytes int

	// Final is the stage folder <root>/<stage>/<key>, where Dir is an
	// attempt folder beside it ("": Dir is the stage folder).
	Final string
	// Started is when the run of the stage started: the manifest's
	// started (zero: when the job is built).
	Started time.Time
	// Detached says no launcher waits for the stage's job (--async, or a
	// job written to --template_location): its finish step swaps an
	// attempt folder in itself (stages/finish.go).
	Detached bool
	// JobID is set by a Beam stage once its job is submitted.
	JobID string
}

// Output describes what a stage wrote.
type Output struct {
	Files []FileInfo
	Meta  map[string]any
	JobID string
	// Manifest is the manifest the stage's job wrote itself (a Beam stage
	// whose job ends in the finish step), read back; nil for the others,
	// whose manifest the launcher writes.
	Manifest *Manifest
}

// FileInfo is one output file, by path relative to the stage folder.
type FileInfo struct {
	Name    string `json:"name"`
	Split   string `json:"split,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Records int64  `json:"records"`
	Bytes   int64  `json:"bytes"`
}

// Manifest is written last into a stage folder; its presence means done.
type Manifest struct {
	Stage       string          `json:"stage"`
	Version     int             `json:"version"`
	Key         string          `json:"key"`
	Config      json.RawMessage `json:"config"`
	Inputs      []Input         `json:"inputs"`
	Files       []FileInfo      `json:"files"`
	Meta        map[string]any  `json:"meta,omitempty"`
	CodeVersion string          `json:"code_version"`
	Runner      string          `json:"runner"`
	JobID       string          `json:"job_id,omitempty"`
	Started     time.Time       `json:"started"`
	Finished    time.Time       `json:"finished"`

	// Dir is the folder the manifest was read from (not stored).
	Dir string `json:"-"`
}

// Input names an upstream stage output.
type Input struct {
	Stage string `json:"stage"`
	Key   string `json:"key"`
}

// ManifestName is the manifest's file name in a stage folder.
const ManifestName = "_MANIFEST.json"

// Path returns the full path of one of the manifest's files.
func (m *Manifest) Path(name string) string { return storage.Join(m.Dir, name) }

// Resolve is the full path of rel, a path inside the stage folder that the
// manifest's field (e.g. "meta.checkpoint") holds, through storage.Within:
// a path leading outside the folder is refused, naming the manifest and
// the field, never read.
func (m *Manifest) Resolve(field, rel string) (string, error) {
	p, err := storage.Within(m.Dir, rel)
	if err != nil {
		return "", fmt.Errorf("manifest %s: %s: %w; the manifest is damaged or forged: delete %s and rerun the %s stage", storage.Join(m.Dir, ManifestName), field, err, m.Dir, m.Stage)
	}
	return p, nil
}

// Split returns the manifest's files of one split, in name order.
func (m *Manifest) Split(split string) []FileInfo {
	var out []FileInfo
	for _, f := range m.Files {
		if f.Split == split {
			out = append(out, f)
		}
	}
	return out
}

// Records sums the record counts of a split's files ("" for all files).
func (m *Manifest) Records(split string) int64 {
	var n int64
	for _, f := range m.Files {
		if split == "" || f.Split == split {
			n += f.Records
		}
	}
	return n
}

var registry = map[string]Stage{}

// Register adds a stage to the registry; stages call it from init.
func Register(s Stage) {
	if _, dup := registry[s.Name()]; dup {
		panic("stages: duplicate stage " + s.Name())
	}
	registry[s.Name()] = s
}

// Lookup returns a registered stage.
func Lookup(name string) (Stage, error) {
	s, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown stage %q (known: %v)", name, Names())
	}
	return s, nil
}

// Names lists the registered stages in name order.
func Names() []string {
	var out []string
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Key computes a stage's key from its name, version, params and upstream keys.
func Key(s Stage, params any, upstream, upstreamKeys []string) (string, error) {
	canon, err := canonicalJSON(params)
	if err != nil {
		return "", fmt.Errorf("stages: %s: encode config: %w", s.Name(), err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "name=%s\nversion=%d\nconfig=%s\n", s.Name(), s.Version(), canon)
	for i, k := range upstreamKeys {
		fmt.Fprintf(h, "upstream[%d]=%s=%s\n", i, upstream[i], k)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// canonicalJSON encodes v with sorted object keys and no insignificant
// whitespace: struct fields are encoded, decoded into generic maps (which
// json.Marshal writes sorted), and encoded again.
func canonicalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return nil, err
	}
	return json.Marshal(generic)
}

// ReadManifest reads the manifest in a stage folder. A missing manifest
// gives an error wrapping storage.ErrNotExist.
func ReadManifest(ctx context.Context, dir string) (*Manifest, error) {
	dir = cleanDir(dir)
	p := storage.Join(dir, ManifestName)
	data, err := storage.ReadFile(ctx, p)
	if err != nil {
		return nil, err
	}
	return parseManifest(data, dir)
}

// parseManifest decodes the manifest of folder dir and checks that its
// paths stay inside it.
func parseManifest(data []byte, dir string) (*Manifest, error) {
	p := storage.Join(dir, ManifestName)
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("stages: manifest %s is damaged (%v); delete the folder %s and rerun the stage", p, err, dir)
	}
	m.Dir = dir
	if err := m.checkNames(); err != nil {
		return nil, fmt.Errorf("stages: %w", err)
	}
	return &m, nil
}

// cleanDir drops trailing slashes ("QDIR/", "RUN/") so a folder named
// with one reads like the folder, and its parents are what they seem.
func cleanDir(dir string) string {
	if storage.IsGCS(dir) {
		return strings.TrimRight(dir, "/")
	}
	return filepath.Clean(dir)
}

func writeManifest(ctx context.Context, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFile(ctx, storage.Join(m.Dir, ManifestName), append(data, '\n'))
}

// CodeVersion identifies the code that ran: the VCS revision the binary
// was built from, or its module version.
func CodeVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return bi.Main.Version
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}

// ErrUpstreamMissing is wrapped by errors for a stage run alone whose
// upstream outputs do not exist yet.
var ErrUpstreamMissing = errors.New("upstream stage output missing")

// decodeMeta reads a manifest's meta into a stage's typed output (such as
// TrainOutput), after checking the manifest is of that stage.
func decodeMeta(m *Manifest, stage string, out any) error {
	path := storage.Join(m.Dir, ManifestName)
	if m.Stage != stage {
		return fmt.Errorf("%s holds a %s stage, not a %s stage", m.Dir, m.Stage, stage)
	}
	b, err := json.Marshal(m.Meta)
	if err == nil {
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		return fmt.Errorf("manifest %s: meta does not read as a %s output (%v); the manifest is damaged: delete %s and rerun the stage", path, stage, err, m.Dir)
	}
	return nil
}

// Root returns the root a stage folder lies under. Stage folders are
// <root>/<stage>/<key>; the folder's two names must agree with its
// manifest, so a copied or renamed folder is not mistaken for a run.
func (m *Manifest) Root() (string, error) {
	stageDir := storage.Dir(m.Dir)
	if storage.Base(m.Dir) != m.Key || storage.Base(stageDir) != m.Stage {
		return "", fmt.Errorf("%s holds the %s stage's output %s, but stage folders are ROOT/%s/%s: its upstream outputs cannot be found; use the folder under its root",
			m.Dir, m.Stage, m.Key, m.Stage, m.Key)
	}
	return storage.Dir(stageDir), nil
}

// Upstream reads the manifest of m's input from the named stage, under
// the same root (a train folder's "quantize", then that one's "palette").
func (m *Manifest) Upstream(ctx context.Context, stage string) (*Manifest, error) {
	root, err := m.Root()
	if err != nil {
		return nil, err
	}
	for _, in := range m.Inputs {
		if in.Stage == stage {
			return ReadManifest(ctx, storage.Join(root, in.Stage, in.Key))
		}
	}
	return nil, fmt.Errorf("%s (a %s stage) has no %s input", m.Dir, m.Stage, stage)
}
