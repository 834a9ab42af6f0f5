package stages

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/metrics"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/jobopts"

	"github.com/igpt/igpt/internal/beamboot"
)

// TestWaitForJob: waiting for a job polls for its manifest and its state:
// it returns the manifest once it appears, an error naming the job when
// the job ends without it (failed, cancelled, or done with no manifest)
// or its state cannot be read, and stops when its context ends.
func TestWaitForJob(t *testing.T) {
	job := JobRef{ID: "2026-12-07_01_02_03-4242", Runner: "dataflow", Project: "p", Region: "r"}
	cases := []struct {
		name   string
		states []string // the state at each poll; the last repeats
		// manifestAt is the poll at which the job writes the manifest (0: never).
		manifestAt int
		stateErr   bool
		cancelAt   int // the poll at which the caller gives up (0: never)
		want       string
		polls      int
	}{
		{name: "manifest appears", states: []string{"JOB_STATE_PENDING", "JOB_STATE_RUNNING"}, manifestAt: 4, polls: 3},
		{name: "manifest then done", states: []string{"JOB_STATE_RUNNING", "JOB_STATE_DONE"}, manifestAt: 2, polls: 1},
		{name: "failed", states: []string{"JOB_STATE_RUNNING", "JOB_STATE_FAILED"}, want: "dataflow job 2026-12-07_01_02_03-4242 ended JOB_STATE_FAILED without finishing its stage", polls: 2},
		{name: "cancelled", states: []string{"JOB_STATE_CANCELLED"}, want: "dataflow job 2026-12-07_01_02_03-4242 ended JOB_STATE_CANCELLED", polls: 1},
		{name: "done without manifest", states: []string{"JOB_STATE_RUNNING", "JOB_STATE_DONE"}, want: "dataflow job 2026-12-07_01_02_03-4242 is JOB_STATE_DONE but wrote no", polls: 2},
		{name: "state unreadable", stateErr: true, want: "dataflow job 2026-12-07_01_02_03-4242: reading its state failed 3 times in a row", polls: 3},
		{name: "cancelled by the caller", states: []string{"JOB_STATE_RUNNING"}, cancelAt: 2, want: "stopped waiting for dataflow job 2026-12-07_01_02_03-4242", polls: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			polls := 0
			w := jobWaiter{every: time.Hour, maxErrors: 3,
				state: func(ctx context.Context, j JobRef) (string, error) {
					polls++
					if j != job {
						t.Errorf("state asked for %v, want %v", j, job)
					}
					if polls == tc.cancelAt {
						cancel()
					}
					if tc.manifestAt > 0 && polls+1 == tc.manifestAt {
						if err := writeManifest(ctx, &Manifest{Stage: "download", Key: "0123456789ab", Dir: dir}); err != nil {
							t.Fatal(err)
						}
					}
					if tc.stateErr {
						return "", errors.New("403: permission denied")
					}
					return tc.states[min(polls, len(tc.states))-1], nil
				},
				// The clock: no real waiting; a wait that never ends is
				// cancelled after 100 polls and failed after 200.
				after: func(d time.Duration) <-chan time.Time {
					if d != time.Hour {
						t.Errorf("polled every %v, want the waiter's interval", d)
					}
					if polls >= 100 {
						cancel()
					}
					if polls >= 200 {
						t.Fatalf("still polling after %d polls, and after the caller gave up", polls)
					}
					c := make(chan time.Time, 1)
					c <- time.Time{}
					return c
				},
			}
			m, err := waitForJob(ctx, dir, job, w, discardLog())
			if polls != tc.polls {
				t.Errorf("%d polls of the job's state, want %d", polls, tc.polls)
			}
			if tc.want == "" {
				if err != nil || m == nil || m.Key != "0123456789ab" {
					t.Fatalf("got %v, %v; want the manifest", m, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
			if tc.cancelAt > 0 && !errors.Is(err, context.Canceled) {
				t.Errorf("the caller's cancellation is not in %v", err)
			}
		})
	}
}

// fakeDataflowResult is what the fake Dataflow runner answers a submission with.
type fakeDataflowResult struct{ id string }

func (r fakeDataflowResult) Metrics() metrics.Results { return metrics.Results{} }
func (r fakeDataflowResult) JobID() string            { return r.id }

// fakeDataflow stands in for Dataflow: beam.Run for the dataflow runner
// must submit without waiting (Beam's --async); the job then runs on
// prism in the background when run is set (Dataflow running it), or never
// (a job still queued). Its states are those of state; its workers know
// their job id. It returns the submitted ids and a wait for the jobs.
func fakeDataflow(t *testing.T, run bool, state func(JobRef) string) (*[]string, *sync.WaitGroup) {
	t.Helper()
	setFlags(t, map[string]string{"project": "igpt-test", "region": "us-central1"})
	var ids []string
	var wg sync.WaitGroup
	var n atomic.Int32
	savedRun, savedWait, savedID := beamRun, jobWait, workerJobID
	current := ""
	beamRun = func(ctx context.Context, runner string, p *beam.Pipeline) (beam.PipelineResult, error) {
		if runner != "dataflow" || !*jobopts.Async {
			t.Errorf("a %s job was submitted with --async %v: igpt must not let Beam wait for a Dataflow job", runner, *jobopts.Async)
		}
		id := "2026-12-07_job-" + string(rune('0'+n.Add(1)))
		ids = append(ids, id)
		current = id
		if run {
			// The job runs on prism in the background, on the in-process
			// worker pool and not asynchronously (Beam reads --async, which
			// the launcher holds true now, as it submits): Beam reads the
			// flags before it submits, and prism starts the job's worker
			// after, so they are restored once the worker has started.
			pool, err := beamboot.InProcess()
			if err != nil {
				t.Fatal(err)
			}
			before := pool.Started()
			restore, err := inProcessWorkers()
			if err != nil {
				t.Fatal(err)
			}
			async := *jobopts.Async
			*jobopts.Async = false
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := beam.Run(context.Background(), "prism", p); err != nil {
					t.Errorf("the job failed: %v", err)
				}
			}()
			for deadline := time.Now().Add(time.Minute); pool.Started() == before && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			*jobopts.Async = async
			restore()
		}
		return fakeDataflowResult{id: id}, nil
	}
	jobWait = jobWaiter{state: func(_ context.Context, j JobRef) (string, error) { return state(j), nil },
		every: 5 * time.Millisecond, after: time.After, maxErrors: 3}
	workerJobID = func(context.Context, string) string { return current }
	t.Cleanup(func() {
		wg.Wait()
		beamRun, jobWait, workerJobID = savedRun, savedWait, savedID
	})
	return &ids, &wg
}

// TestDataflowWaitsForManifest: igpt run --runner=dataflow submits each
// stage's job and waits for it by polling for the manifest the job writes
// (and the job's state), then goes on to the next stage; the manifest is the
// job's, with the job's id, and the launcher wrote no other.
func TestDataflowWaitsForManifest(t *testing.T) {
	var polled atomic.Int32
	ids, _ := fakeDataflow(t, true, func(JobRef) string { polled.Add(1); return "JOB_STATE_RUNNING" })
	root := t.TempDir()
	p := planOf(t, jobTestYAML(t, root, folderArchive(t, 8, nil)))
	if err := p.RunUntil(context.Background(), "palette", Options{Runner: "dataflow", Log: discardLog()}); err != nil {
		t.Fatal(err)
	}
	if len(*ids) != 2 {
		t.Fatalf("%d jobs submitted, want 2", len(*ids))
	}
	for i, name := range []string{"download", "palette"} {
		st, _ := p.Step(name)
		m, err := ReadManifest(context.Background(), st.Dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.JobID != (*ids)[i] || m.Runner != "dataflow" {
			t.Errorf("%s: manifest of job %q on %s, want job %s on dataflow", name, m.JobID, m.Runner, (*ids)[i])
		}
		if mk, err := readJobMarker(context.Background(), st.Dir); err != nil || mk != nil {
			t.Errorf("%s: the job marker of a job seen to its end is left: %+v, %v", name, mk, err)
		}
	}
	t.Logf("job state read %d times while waiting", polled.Load())
}

// TestAsyncSubmitsOneStage: with --async igpt submits the first stage to
// run, prints its job and the manifest it will write, and leaves every
// later stage with "upstream not finished yet; rerun when job X is done";
// the job writes the stage folder itself (no attempt folder, nobody to swap
// it in). A rerun while the job runs refuses to clear its folder; once the
// job has failed, a rerun submits again. --async is refused with another
// runner, and for a stage that is not one Beam job.
func TestAsyncSubmitsOneStage(t *testing.T) {
	state := "JOB_STATE_RUNNING"
	ids, _ := fakeDataflow(t, false, func(JobRef) string { return state })
	root := t.TempDir()
	yaml := jobTestYAML(t, root, folderArchive(t, 8, nil))
	ctx := context.Background()
	var out bytes.Buffer
	opt := Options{Runner: "dataflow", Async: true, Out: &out, Log: discardLog()}
	p := planOf(t, yaml)
	if err := p.RunUntil(ctx, "quantize", opt); err != nil {
		t.Fatal(err)
	}
	dl, _ := p.Step("download")
	if len(*ids) != 1 {
		t.Fatalf("%d jobs submitted, want 1", len(*ids))
	}
	job := (*ids)[0]
	for _, want := range []string{
		"download: submitted dataflow job " + job + "; it finishes the stage by writing " + filepath.Join(dl.Dir, ManifestName),
		"palette: not started: upstream not finished yet; rerun when job " + job + " is done",
		"quantize: not started: upstream not finished yet; rerun when job " + job + " is done",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output does not say %q:\n%s", want, out.String())
		}
	}
	if ms := manifestsUnder(t, root); len(ms) > 0 {
		t.Fatalf("manifests before any job ran: %v", ms)
	}
	if _, err := os.Stat(filepath.Join(dl.Dir, UnitsName)); err != nil {
		t.Errorf("the detached job does not write the stage folder itself: %v", err)
	}
	if _, err := os.Stat(attemptDir(dl.Dir)); !os.IsNotExist(err) {
		t.Errorf("a detached job with nothing to protect has an attempt folder (%v)", err)
	}
	if s := statusOf(t, p.Config); !strings.Contains(s, "submitted (dataflow job "+job+" at ") {
		t.Errorf("igpt status does not show the submitted job:\n%s", s)
	}

	// While the job runs, a rerun neither clears its folder nor submits.
	out.Reset()
	err := planOf(t, yaml).RunUntil(ctx, "quantize", opt)
	if err == nil || !strings.Contains(err.Error(), "rerun when job "+job+" is done") {
		t.Fatalf("a rerun while the job runs: %v", err)
	}
	err = planOf(t, yaml).RunOne(ctx, "palette", opt)
	if err == nil || !strings.Contains(err.Error(), "upstream not finished yet; rerun when job "+job+" is done") {
		t.Fatalf("the next stage alone while the job runs: %v", err)
	}
	if len(*ids) != 1 {
		t.Fatalf("%d jobs submitted while the first runs", len(*ids))
	}
	// Once it has failed, a rerun submits the stage again.
	state = "JOB_STATE_FAILED"
	if err := planOf(t, yaml).RunUntil(ctx, "quantize", opt); err != nil {
		t.Fatal(err)
	}
	if len(*ids) != 2 {
		t.Fatalf("%d jobs submitted after the first failed, want 2", len(*ids))
	}
	if mk, err := readJobMarker(ctx, dl.Dir); err != nil || mk == nil || mk.ID != (*ids)[1] {
		t.Errorf("the job marker after the resubmission: %+v, %v", mk, err)
	}

	if err := planOf(t, yaml).RunAll(ctx, Options{Runner: "prism", Async: true}); err == nil || !strings.Contains(err.Error(), "--async needs --runner=dataflow") {
		t.Errorf("--async on prism: %v", err)
	}
	// A stage that is not one Beam job cannot be left to run alone.
	reg := chain(map[string]*int{})
	lp, err := newPlan(ctx, testConfig(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.RunAll(ctx, Options{Runner: "dataflow", Async: true, Log: discardLog()}); err == nil || !strings.Contains(err.Error(), "cannot run detached") {
		t.Errorf("--async with a stage that runs in igpt: %v", err)
	}
}

// discardLog is a logger that writes nothing.
func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
