package stages

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow/dataflowlib"
	"github.com/igpt/igpt/internal/storage"
)

// runJob runs a job stage's one Beam job: build adds the stage's writing
// steps to the pipeline and returns what they emit last; runJob ends the
// pipeline with the finish step (stages/finish.go), runs or submits the
// job, and returns the manifest the job wrote, read back (Output.Manifest).
//
// On prism and direct the job runs here to its end. On Dataflow the job is
// submitted and then waited for by polling for its manifest and its state
// (waitForJob), or, detached (--async), not waited for: ErrSubmitted, with
// rc.JobID set. A dry run and a job written to --template_location return
// ErrDryRun and ErrTemplateWritten.
func runJob(ctx context.Context, rc *RunContext, s jobStage, state any, build func(beam.Scope) (beam.PCollection, error)) (*Output, error) {
	spec, err := newFinishSpec(s, rc, state)
	if err != nil {
		return nil, err
	}
	// The manifest records the job graph's size, which the finish step
	// carries in the graph: build until the recorded size is the size
	// (the number's own digits settle in a round or two).
	var p *beam.Pipeline
	for round := 0; ; round++ {
		var sc beam.Scope
		p, sc = beam.NewPipelineWithRoot()
		written, err := build(sc)
		if err != nil {
			return nil, err
		}
		if err := addFinish(sc, spec, written); err != nil {
			return nil, err
		}
		n, err := GraphBytes(p)
		if err != nil || n == spec.GraphBytes || round == 4 {
			break
		}
		spec.GraphBytes = n
	}
	dataflow := rc.Runner == "dataflow"
	job, err := submitPipeline(ctx, rc, p, dataflow)
	if err != nil {
		return nil, err
	}
	rc.JobID = job
	where := rc.Dir
	if spec.Swap {
		where = rc.final()
	}
	var m *Manifest
	if dataflow {
		ref := JobRef{ID: job, Runner: rc.Runner, Project: flagValue("project"), Region: flagValue("region")}
		writeJobMarker(ctx, rc, ref, storage.Join(where, ManifestName))
		if rc.Detached {
			return nil, ErrSubmitted
		}
		rc.logger().Info("waiting for the job to finish its stage", "job", job, "manifest", storage.Join(where, ManifestName))
		m, err = waitForJob(ctx, where, ref, jobWait, rc.logger())
		if err == nil || errors.Is(err, errJobEnded) {
			// The job is over: no later run needs to ask about it.
			if rerr := storage.Remove(context.WithoutCancel(ctx), jobMarkerPath(rc.final())); rerr != nil {
				rc.logger().Warn("job marker not removed", "err", rerr)
			}
		}
		if err != nil {
			return nil, err
		}
	} else if m, err = ReadManifest(ctx, where); err != nil {
		return nil, fmt.Errorf("the job %s ended without writing the stage's manifest: %w", job, err)
	}
	return &Output{Files: m.Files, Meta: m.Meta, JobID: cmp.Or(m.JobID, job), Manifest: m}, nil
}

// flagValue is a flag's value, "" when the flag is not defined.
func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// JobRef names a submitted job: enough to ask its runner for its state.
type JobRef struct {
	ID      string `json:"job_id"`
	Runner  string `json:"runner"`
	Project string `json:"project,omitempty"`
	Region  string `json:"region,omitempty"`
}

func (j JobRef) String() string { return j.Runner + " job " + j.ID }

// Dataflow job states (the API's JobState values) that end a job.
const (
	jobDone = "JOB_STATE_DONE"
)

// jobEnded reports whether a Dataflow job state is terminal without the
// job having finished its work: it will never write the manifest.
func jobEnded(state string) bool {
	switch state {
	case "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED":
		return true
	}
	return false
}

// errJobEnded is wrapped by waitForJob's error for a job that ended
// without finishing its stage.
var errJobEnded = errors.New("the job ended without finishing its stage")

// jobWaiter is how waitForJob polls: the state of a job, the interval,
// and the clock (tests replace all three).
type jobWaiter struct {
	state func(ctx context.Context, job JobRef) (string, error)
	every time.Duration
	after func(time.Duration) <-chan time.Time
	// maxErrors is how many state reads in a row may fail before the
	// wait gives up.
	maxErrors int
}

// jobWait is the waiter of Dataflow jobs.
var jobWait = jobWaiter{state: dataflowJobState, every: 20 * time.Second, after: time.After, maxErrors: 10}

// waitForJob polls dir for the manifest the job writes and the job for its
// state until the manifest appears (the stage is finished), the job ends
// without it (an error naming the job and its state), or ctx ends.
func waitForJob(ctx context.Context, dir string, job JobRef, w jobWaiter, log *slog.Logger) (*Manifest, error) {
	errs := 0
	stopped := func() error {
		return fmt.Errorf("stopped waiting for %s (it may still run, and finish its stage): %w", job, ctx.Err())
	}
	for {
		if ctx.Err() != nil {
			return nil, stopped()
		}
		m, err := ReadManifest(ctx, dir)
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, storage.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", job, err)
		}
		state, err := w.state(ctx, job)
		switch {
		case err != nil && ctx.Err() == nil:
			if errs++; errs >= w.maxErrors {
				return nil, fmt.Errorf("%s: reading its state failed %d times in a row, the last: %w; its stage finishes when %s appears", job, errs, err, storage.Join(dir, ManifestName))
			}
			log.Warn("job state not read; polling again", "job", job.ID, "err", err)
		case err != nil:
		case jobEnded(state):
			return nil, fmt.Errorf("%s ended %s without finishing its stage (no %s): see the job's logs: %w", job, state, storage.Join(dir, ManifestName), errJobEnded)
		case state == jobDone:
			// The manifest is written before the job ends: one more look.
			if m, err := ReadManifest(ctx, dir); err == nil {
				return m, nil
			}
			return nil, fmt.Errorf("%s is %s but wrote no %s: its finish step did not run: %w", job, state, storage.Join(dir, ManifestName), errJobEnded)
		default:
			errs = 0
		}
		select {
		case <-ctx.Done():
			return nil, stopped()
		case <-w.after(w.every):
		}
	}
}

// dataflowJobState asks the Dataflow API for a job's current state.
func dataflowJobState(ctx context.Context, job JobRef) (string, error) {
	if job.Runner != "dataflow" {
		return "", fmt.Errorf("cannot ask the %s runner for the state of job %s", job.Runner, job.ID)
	}
	if job.Project == "" || job.Region == "" {
		return "", fmt.Errorf("dataflow job %s: no project and region to look it up in", job.ID)
	}
	client, err := dataflowlib.NewClient(ctx, flagValue("dataflow_endpoint"))
	if err != nil {
		return "", fmt.Errorf("dataflow client: %w", err)
	}
	j, err := client.Projects.Locations.Jobs.Get(job.Project, job.Region, job.ID).Context(ctx).Do()
	if err != nil {
		return "", fmt.Errorf("dataflow job %s: %w", job.ID, err)
	}
	return j.CurrentState, nil
}

// A stage folder's job marker <key>.job, beside its lock, names the
// Dataflow job that writes the folder: the job may outlive its launcher
// (--async, or a launcher stopped while it waited), and a later run must
// not clear the folder under it.
func jobMarkerPath(dir string) string { return dir + ".job" }

// jobMarker is what a job marker holds.
type jobMarker struct {
	JobRef
	Submitted time.Time `json:"submitted"`
	Manifest  string    `json:"manifest"`
}

// writeJobMarker records a submitted job beside the stage folder. A
// marker that cannot be written is logged: the job runs all the same.
func writeJobMarker(ctx context.Context, rc *RunContext, job JobRef, manifest string) {
	b, err := json.MarshalIndent(jobMarker{JobRef: job, Submitted: time.Now().UTC(), Manifest: manifest}, "", "  ")
	if err == nil {
		err = storage.WriteFile(ctx, jobMarkerPath(rc.final()), b)
	}
	if err != nil {
		rc.logger().Warn("job marker not written (a later run will not know the job writes this folder)", "job", job.ID, "err", err)
	}
}

// readJobMarker reads a stage folder's job marker: nil if there is none.
func readJobMarker(ctx context.Context, dir string) (*jobMarker, error) {
	b, err := storage.ReadFile(ctx, jobMarkerPath(dir))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m jobMarker
	if err := json.Unmarshal(b, &m); err != nil || m.ID == "" {
		return nil, fmt.Errorf("job marker %s is damaged (%v): delete it if no job writes %s", jobMarkerPath(dir), err, dir)
	}
	return &m, nil
}

// checkJobMarker is called, under the stage lock, before a run of the stage
// clears its folder: a job that a launcher submitted and that still runs
// refuses the run (its folder is being written); a marker of a job that has
// ended is removed.
func checkJobMarker(ctx context.Context, dir string, log *slog.Logger) error {
	m, err := readJobMarker(ctx, dir)
	if err != nil || m == nil {
		return err
	}
	state, err := jobWait.state(ctx, m.JobRef)
	if err != nil {
		return fmt.Errorf("%s (submitted %s) may still be writing %s, and its state cannot be read: %w; if it has ended, delete %s",
			m.JobRef, m.Submitted.Format(time.RFC3339), dir, err, jobMarkerPath(dir))
	}
	if state != jobDone && !jobEnded(state) {
		return fmt.Errorf("%s (submitted %s) is still writing %s (%s): the stage is not finished yet; rerun when job %s is done",
			m.JobRef, m.Submitted.Format(time.RFC3339), dir, state, m.ID)
	}
	log.Info("the job that wrote this stage folder has ended", "job", m.ID, "state", state)
	return storage.Remove(ctx, jobMarkerPath(dir))
}

// submittedNote is the line igpt prints for a job submitted with --async.
func submittedNote(stage string, job JobRef, manifest string) string {
	return fmt.Sprintf("%s: submitted %s; it finishes the stage by writing %s. Rerun when job %s is done to go on.", stage, job, manifest, job.ID)
}

// notStartedNote is the line igpt prints for each stage an --async run
// leaves for later.
func notStartedNote(stage, job string) string {
	return fmt.Sprintf("%s: not started: upstream not finished yet; rerun when job %s is done", stage, job)
}

// isJobStage reports whether s is one Beam job that finishes its own stage.
func isJobStage(s Stage) bool {
	_, ok := s.(jobStage)
	return ok
}

// detachedRefusal is the error for a stage that cannot run detached.
func detachedRefusal(name string) error {
	return fmt.Errorf("stages: %s cannot run detached (--async, or --template_location): only a stage that is one Beam job finishing its own stage can (%s); run %s without --async, from a machine that stays until it ends",
		name, strings.Join(jobStageNames(), ", "), name)
}

// jobStageNames lists the registered job stages.
func jobStageNames() []string {
	var out []string
	for _, n := range Names() {
		if isJobStage(registry[n]) {
			out = append(out, n)
		}
	}
	return out
}
