package stages

// A job finishes its stage. Each Beam stage that is one job (download,
// palette, quantize, vqvae-encode: the jobStage interface) ends its
// pipeline with a finish step, FinishStageFn, that runs exactly once after
// every shard is written: its one input element is an impulse, and its side
// input is what the writing steps emit last (their stats, after a
// GroupByKey; palette's written histogram), which a runner materialises in
// full before the step starts. So it cannot start before the last write
// has finished, and a job that fails anywhere never reaches it. The finish step computes the stage's Output from what the job
// wrote (the stage's Finish, the code each Run used to run after its job,
// on the launcher), makes the manifest with newManifest (the one code path
// publish uses too), checks that every file it lists exists (checkFiles)
// and writes _MANIFEST.json atomically (a rename locally; on GCS the object
// appears only when its writer closes). The launcher, if it stays, reads
// that manifest back and verifies it; it never writes a second one.
//
// Attempt folders and the lock:
//
//   - When the launcher stays (igpt run / igpt stage without --async), it
//     holds the stage lock for the whole job, as before: the job writes the
//     attempt folder <key>.attempt, its finish step writes the manifest
//     there, and the launcher swaps the attempt in (swapIn) once it has
//     read the manifest, checking its lock first. A launcher killed while
//     the job runs leaves the job to write the attempt's manifest; the next
//     run's recoverSwap swaps it in (an attempt with a manifest is a
//     finished output).
//   - When nobody stays (--async, or a job written to --template_location
//     for a flex template launch), the launcher takes the lock only while
//     it plans, clears and submits. The job must leave a finished stage
//     folder on its own: with no finished output to protect, it writes the
//     stage folder <key> itself and its manifest is the last thing written
//     there; with a finished output (--force), it writes the attempt
//     folder and its finish step, after writing the attempt's manifest,
//     takes the stage lock and swaps the attempt in.
//   - A Dataflow job's launcher records the job in <key>.job, beside the
//     lock: a later run that finds the stage unfinished and that job still
//     running refuses to clear the folder under it (checkJobMarker).
//
// A worker is the igpt binary itself, so the finish step finds the stage
// in the registry by name and re-creates the run's config from the YAML
// the launcher serialised into the step (FinishSpec): the step recomputes
// the stage key from it and refuses to finish a stage whose key differs.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"cloud.google.com/go/compute/metadata"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/igpt/igpt/internal/storage"
	"gopkg.in/yaml.v3"
)

func init() {
	register.DoFn3x1[context.Context, []byte, func(*beam.T) bool, error](&FinishStageFn{})
	register.Iter1[beam.T]()
}

// jobStage is a Beam stage that is one job ending in the finish step.
type jobStage interface {
	Stage
	// Finish computes the stage's Output from what its job wrote into
	// rc.Dir. state is what Run planned before the job (the stage's own
	// JSON). It runs in the job's finish step, on a worker.
	Finish(ctx context.Context, rc *RunContext, state json.RawMessage) (*Output, error)
}

// ErrSubmitted is returned by a Beam stage whose job was submitted and not
// waited for (--async): the job finishes the stage on its own.
var ErrSubmitted = errors.New("job submitted, not waited for (--async)")

// FinishSpec is what a job's finish step needs to finish its stage on a
// worker: the stage, the run's config, where the job wrote, the upstream
// outputs, and what the stage planned. It travels in the job graph as
// JSON: paths and settings only, never lists that grow with the data.
type FinishSpec struct {
	Stage string `json:"stage"`
	// Config is the run's config as gzipped YAML (every key, defaults
	// filled in: see encodeConfig), a third of the YAML's size in the job
	// graph; ConfigPath the file it was read from, for messages.
	Config     []byte `json:"config"`
	ConfigPath string `json:"config_path,omitempty"`
	Finetune   bool   `json:"finetune,omitempty"` // the config has a finetune section
	Key        string `json:"key"`
	// Dir is where the job writes: the stage folder Final, or its attempt
	// folder.
	Dir   string `json:"dir"`
	Final string `json:"final"`
	// Swap asks the finish step to swap Dir into Final after writing the
	// manifest: no launcher waits to do it.
	Swap       bool            `json:"swap,omitempty"`
	Inputs     []FinishInput   `json:"inputs,omitempty"`
	Runner     string          `json:"runner"`
	Started    time.Time       `json:"started"`
	GraphBytes int             `json:"graph_bytes,omitempty"`
	State      json.RawMessage `json:"state,omitempty"`
}

// FinishInput is one upstream output of a stage, where the finish step
// reads its manifest.
type FinishInput struct {
	Stage string `json:"stage"`
	Key   string `json:"key"`
	Dir   string `json:"dir"`
}

// final is the stage folder: Final, or Dir when unset.
func (rc *RunContext) final() string {
	if rc.Final != "" {
		return rc.Final
	}
	return rc.Dir
}

// newFinishSpec describes the finish of stage s run under rc.
func newFinishSpec(s Stage, rc *RunContext, state any) (*FinishSpec, error) {
	cfg, err := encodeConfig(rc.Config)
	if err != nil {
		return nil, fmt.Errorf("stages: %s: encode the config for the finish step: %w", s.Name(), err)
	}
	st, err := json.Marshal(state)
	if err != nil {
		return nil, fmt.Errorf("stages: %s: encode the finish step's state: %w", s.Name(), err)
	}
	started := rc.Started
	if started.IsZero() {
		started = time.Now()
	}
	spec := &FinishSpec{Stage: s.Name(), Config: cfg, ConfigPath: rc.Config.Path, Finetune: rc.Config.hasFinetune,
		Key: rc.Key, Dir: rc.Dir, Final: rc.final(), Runner: rc.Runner, Started: started.UTC(), State: st}
	spec.Swap = rc.Detached && spec.Dir != spec.Final
	for _, up := range s.Upstream(rc.Config) {
		m := rc.Inputs[up]
		if m == nil {
			return nil, fmt.Errorf("stages: %s: no %s output among the inputs", s.Name(), up)
		}
		spec.Inputs = append(spec.Inputs, FinishInput{Stage: up, Key: m.Key, Dir: m.Dir})
	}
	return spec, nil
}

// encodeConfig writes cfg as gzipped YAML that config decodes back into
// the same Config: every key, except empty lists and maps, which would
// decode as empty where the config holds nil (the two mean the same in
// every section).
func encodeConfig(cfg *Config) ([]byte, error) {
	var doc yaml.Node
	if err := doc.Encode(cfg); err != nil {
		return nil, err
	}
	dropEmpty(&doc)
	text, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	z := gzip.NewWriter(&b)
	if _, err := z.Write(text); err != nil {
		return nil, err
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// dropEmpty removes the keys of n's mappings, at any depth, whose value is
// an empty list or map.
func dropEmpty(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		for _, c := range n.Content {
			dropEmpty(c)
		}
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		v := n.Content[i+1]
		if (v.Kind == yaml.SequenceNode || v.Kind == yaml.MappingNode) && len(v.Content) == 0 {
			continue
		}
		dropEmpty(v)
		kept = append(kept, n.Content[i], v)
	}
	n.Content = kept
}

// config re-creates the run's config. It was checked when the launcher
// loaded it; the YAML holds it with its defaults filled in.
func (f *FinishSpec) config() (*Config, error) {
	var cfg Config
	z, err := gzip.NewReader(bytes.NewReader(f.Config))
	if err == nil {
		var text []byte
		if text, err = io.ReadAll(io.LimitReader(z, MaxConfigBytes)); err == nil {
			err = yaml.Unmarshal(text, &cfg)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stages: %s: the finish step's config does not decode: %w", f.Stage, err)
	}
	cfg.Path, cfg.hasFinetune = f.ConfigPath, f.Finetune
	return &cfg, nil
}

// FinishStageFn is a job's last step: it finishes the stage (finishStage)
// once, after every write of the job. Its input is the count of what the
// writing steps emitted, one element that exists only once they are done.
type FinishStageFn struct {
	Spec string // FinishSpec as JSON
}

// ProcessElement finishes the stage, once: its main input is an impulse,
// and its side input, what the writing steps emitted, is ready only once
// they are all done.
func (f *FinishStageFn) ProcessElement(ctx context.Context, _ []byte, writes func(*beam.T) bool) error {
	written := 0
	var w beam.T
	for writes(&w) {
		written++
	}
	var spec FinishSpec
	if err := json.Unmarshal([]byte(f.Spec), &spec); err != nil {
		return fmt.Errorf("stages: the finish step's spec does not decode: %w", err)
	}
	m, err := finishStage(ctx, &spec)
	if err != nil {
		return err
	}
	slog.Info("stage finished by its job", "stage", spec.Stage, "key", spec.Key, "dir", spec.Final,
		"writes", written, "files", len(m.Files), "records", m.Records(""))
	return nil
}

// addFinish ends a stage's pipeline with its finish step, sequenced after
// written: the PCollection the writing steps emit last.
func addFinish(s beam.Scope, spec *FinishSpec, written beam.PCollection) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("stages: %s: encode the finish step: %w", spec.Stage, err)
	}
	s = s.Scope("Finish")
	// One element (an impulse) with written as a side input: a runner
	// runs the step only once every element of written exists (none
	// included, so an empty output still finishes).
	beam.ParDo0(s.Scope("WriteManifest"), &FinishStageFn{Spec: string(b)}, beam.Impulse(s), beam.SideInput{Input: written})
	return nil
}

// finishFault, when set (tests only), is called by the finish step after it
// has computed the stage's output and before it writes the manifest: a job
// that fails there must leave no manifest.
var finishFault func(stage string) error

// workerJobID is the id of the job a worker runs in, "" when it cannot be
// known: Dataflow's workers read it from their VM's metadata; prism's and
// direct's workers are not told theirs.
var workerJobID = func(ctx context.Context, runner string) string {
	if runner != "dataflow" || !metadata.OnGCEWithContext(ctx) {
		return ""
	}
	id, err := metadata.InstanceAttributeValueWithContext(ctx, "job_id")
	if err != nil {
		return ""
	}
	return id
}

// finishStage finishes a stage from its job: it re-creates the config,
// reads the upstream manifests, has the stage compute its Output from what
// the job wrote, and writes the manifest, then swaps an attempt folder in
// when spec.Swap asks. It returns the manifest written.
func finishStage(ctx context.Context, spec *FinishSpec) (*Manifest, error) {
	s, err := Lookup(spec.Stage)
	if err != nil {
		return nil, fmt.Errorf("stages: finish step: %w", err)
	}
	js, ok := s.(jobStage)
	if !ok {
		return nil, fmt.Errorf("stages: finish step: stage %s is not finished by its job", spec.Stage)
	}
	log := slog.Default().With("stage", spec.Stage, "key", spec.Key)
	if spec.Swap {
		// A retried finish step whose first try swapped already finds
		// its own manifest in the stage folder.
		if m, err := ReadManifest(ctx, spec.Final); err == nil && m.Key == spec.Key && m.Started.Equal(spec.Started) {
			return m, nil
		}
	}
	cfg, err := spec.config()
	if err != nil {
		return nil, err
	}
	inputs := map[string]*Manifest{}
	var ups, upKeys []string
	for _, in := range spec.Inputs {
		m, err := ReadManifest(ctx, in.Dir)
		if err != nil {
			return nil, fmt.Errorf("finish step: upstream %s: %w", in.Stage, err)
		}
		if m.Stage != in.Stage || m.Key != in.Key {
			return nil, fmt.Errorf("finish step: %s holds %s/%s, not the %s/%s the job was planned with: an upstream stage was rerun while the job ran; rerun %s",
				in.Dir, m.Stage, m.Key, in.Stage, in.Key, spec.Stage)
		}
		inputs[in.Stage] = m
		ups, upKeys = append(ups, in.Stage), append(upKeys, in.Key)
	}
	if key, err := Key(s, s.Params(cfg), ups, upKeys); err != nil {
		return nil, err
	} else if key != spec.Key {
		return nil, fmt.Errorf("finish step: the config it carries gives %s the key %s, not the job's %s: the worker binary is not the launcher's; rebuild it (infra/build.sh)", spec.Stage, key, spec.Key)
	}
	rc := &RunContext{Config: cfg, Key: spec.Key, Dir: spec.Dir, Final: spec.Final, Inputs: inputs, Runner: spec.Runner,
		Log: log, GraphBytes: spec.GraphBytes, Started: spec.Started, Detached: spec.Swap}
	out, err := js.Finish(ctx, rc, spec.State)
	if err != nil {
		return nil, fmt.Errorf("finish step: %w", err)
	}
	out.JobID = workerJobID(ctx, spec.Runner)
	if finishFault != nil {
		if err := finishFault(spec.Stage); err != nil {
			return nil, err
		}
	}
	m, err := newManifest(s, cfg, spec.Key, inputs, out, spec.Runner, spec.GraphBytes, spec.Started, time.Now(), spec.Dir)
	if err != nil {
		return nil, err
	}
	if err := commitManifest(ctx, m); err != nil {
		return nil, fmt.Errorf("finish step: %w", err)
	}
	if spec.Swap {
		if swapping, err := swapLocked(ctx, spec.Dir, spec.Final, log); err != nil {
			if !swapping {
				// Nothing moved yet: the job fails as one that never
				// finished (no manifest), and the finished output stays.
				if rerr := storage.Remove(context.WithoutCancel(ctx), storage.Join(spec.Dir, ManifestName)); rerr != nil {
					log.Warn("the attempt's manifest not removed", "err", rerr)
				}
			}
			// A swap broken half way keeps the attempt's manifest: the
			// next run's recoverSwap completes it.
			return nil, fmt.Errorf("finish step: %w", err)
		}
	}
	return m, nil
}

// swapLockTimeout bounds how long a finish step waits for the stage lock
// to swap its attempt folder in (tests shorten it).
var swapLockTimeout = 30 * time.Minute

// swapLocked swaps a finished attempt folder in under the stage lock, for
// a job that no launcher waits for. swapping reports whether the swap had
// begun when it failed (it had not when the lock was not had).
func swapLocked(ctx context.Context, attempt, final string, log *slog.Logger) (swapping bool, err error) {
	lctx, cancel := context.WithTimeout(ctx, swapLockTimeout)
	defer cancel()
	lock, err := storage.AcquireLock(lctx, lockPath(final), lockOptions(log))
	if err != nil {
		return false, fmt.Errorf("the attempt %s is finished, but the stage lock stayed held (another run of the stage?): %w", attempt, err)
	}
	defer func() {
		if err := lock.Release(context.WithoutCancel(ctx)); err != nil {
			log.Warn("stage lock not released", "err", err)
		}
	}()
	if ok, err := storage.Exists(ctx, storage.Join(attempt, ManifestName)); err != nil {
		return false, err
	} else if !ok {
		return false, nil // a launcher's recoverSwap swapped it in meanwhile
	}
	return true, swapIn(ctx, attempt, final)
}
