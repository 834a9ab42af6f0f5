package stages

import (
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"reflect"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/exec/optimized" // reflection-free DoFn calls
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/jobopts"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"
	"google.golang.org/protobuf/proto"

	"github.com/igpt/igpt/internal/beamboot"
)

// ErrDryRun is returned by a Beam stage whose Dataflow job was built and
// printed but, because of --dry_run, not submitted. No manifest is written.
var ErrDryRun = errors.New("dry run: the Dataflow job was printed, not submitted")

// ErrTemplateWritten is returned by a Beam stage whose Dataflow job was
// written to --template_location (as a flex template launch asks) instead
// of submitted: the job runs later, launched by Dataflow.
var ErrTemplateWritten = errors.New("the Dataflow job was written to --template_location, not submitted")

// templateLocation is Beam's --template_location flag, "" when unset.
func templateLocation() string {
	if f := flag.Lookup("template_location"); f != nil {
		return f.Value.String()
	}
	return ""
}

// dryRunFlag reports Beam's --dry_run flag (defined by the Dataflow runner;
// igpt's planner reads the same flag).
func dryRunFlag() bool {
	f := flag.Lookup("dry_run")
	return f != nil && f.Value.String() == "true"
}

// rootCause digs the failing DoFn's own error out of a runner's report,
// which reaches the driver as text: "job job-001 failed:", the bundle,
// the plan, then "caused by:" and "DoFn[…] failed:" before the cause. It
// returns "" when the report has no such part.
func rootCause(report string) string {
	i := strings.LastIndex(report, "caused by:")
	if i < 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(report[i+len("caused by:"):]), "\n")
	for len(lines) > 0 {
		l := strings.TrimSpace(lines[0])
		if l == "" || (strings.HasPrefix(l, "DoFn[") && strings.HasSuffix(l, "failed:")) {
			lines = lines[1:]
			continue
		}
		break
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// runPipeline runs p on the named runner and returns the job id. It logs
// the size of the job's pipeline proto, which must stay small and must not
// grow with the dataset (lists travel in files, not in the graph), and
// records it in rc.GraphBytes for the manifest.
func runPipeline(ctx context.Context, rc *RunContext, p *beam.Pipeline) (string, error) {
	return submitPipeline(ctx, rc, p, false)
}

// submitPipeline is runPipeline; with submitOnly, the Dataflow runner
// returns once the job is submitted (Beam's --async) instead of waiting
// for it: the caller waits for the manifest the job writes (waitForJob).
// Other runners run the job to its end either way.
func submitPipeline(ctx context.Context, rc *RunContext, p *beam.Pipeline, submitOnly bool) (string, error) {
	runner := rc.Runner
	// An in-process Beam worker reinstalls Beam's own default logger
	// (beam/log.SetupLoggingWithDefault); put the caller's back after the
	// job, so Beam's lines stay filtered as igpt's main set them up.
	defer slog.SetDefault(slog.Default())
	if !beam.Initialized() {
		beam.Init()
	}
	// beam.Run exits the process on a runner it does not know, past every
	// deferred lock release: refuse it here as an error.
	if err := CheckRunner("runner", runner); err != nil {
		return "", err
	}
	if runner == "dataflow" {
		if err := checkDataflowFlags(rc.logger()); err != nil {
			return "", err
		}
	}
	if n, err := GraphBytes(p); err == nil {
		rc.GraphBytes = n
		rc.logger().Info("job graph", "runner", runner, "pipeline_proto_bytes", n)
	}
	if runner == "prism" {
		restore, err := inProcessWorkers()
		if err != nil {
			return "", err
		}
		defer restore()
	}
	if runner == "dataflow" {
		defer func(was bool) { *jobopts.Async = was }(*jobopts.Async)
		*jobopts.Async = submitOnly
	}
	res, err := beamRun(ctx, runner, p)
	if err != nil {
		if cause := rootCause(err.Error()); cause != "" {
			// The cause first: the runner's report (job, bundle, plan)
			// follows for whoever needs it.
			return "", fmt.Errorf("%s\n%s runner: %w", cause, runner, err)
		}
		return "", fmt.Errorf("%s runner: %w", runner, err)
	}
	// A runner that did not submit (a dry run, or Dataflow writing a
	// template) returns a nil result, sometimes as a typed nil pointer in
	// the interface: either has no job id to ask for.
	if res == nil || isNilResult(res) {
		if runner == "dataflow" && dryRunFlag() {
			return "", ErrDryRun
		}
		if loc := templateLocation(); runner == "dataflow" && loc != "" {
			rc.logger().Info("Dataflow job written, not submitted", "template_location", loc, "pipeline_proto_bytes", rc.GraphBytes)
			return "", ErrTemplateWritten
		}
		return "", nil
	}
	return res.JobID(), nil
}

// inProcessWorkers points prism at the process's in-process worker pool
// (beamboot.InProcess) where it would use Beam's loopback mode (no
// --environment_type, or "loopback"): the same SDK harness in this process,
// from a pool that outlives the job, so a worker request prism sends after
// a job ended cannot kill the process (see beamboot.InProcessPool).
// --worker_processes and any other environment are left as they are.
// While the job runs, the process collects at a worker's target
// (beamboot.InProcessWorkerGC). restore puts the flags and the target back.
func inProcessWorkers() (restore func(), err error) {
	switch strings.ToLower(*jobopts.EnvironmentType) {
	case "", "loopback":
	default:
		return func() {}, nil
	}
	pool, err := beamboot.InProcess()
	if err != nil {
		return nil, err
	}
	flags, err := beamboot.UseWorkers(pool.Addr())
	if err != nil {
		return nil, err
	}
	gc := beamboot.InProcessWorkerGC() // this process is the job's worker
	return func() { gc(); flags() }, nil
}

// beamRun runs a pipeline: beam.Run, which tests replace to build a
// stage's job graph without running it.
var beamRun = beam.Run

// isNilResult reports a typed nil pointer held in a PipelineResult (the
// Dataflow runner returns one when it writes a template instead of a job).
func isNilResult(res beam.PipelineResult) bool {
	v := reflect.ValueOf(res)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// GraphBytes is the size of p's pipeline proto: the job graph a runner
// receives (Dataflow's limit is 10 MB; igpt's are a few KB).
func GraphBytes(p *beam.Pipeline) (int, error) {
	edges, _, err := p.Build()
	if err != nil {
		return 0, err
	}
	pb, err := graphx.Marshal(edges, &graphx.Options{Environment: &pipepb.Environment{Urn: "beam:env:docker:v1"}})
	if err != nil {
		return 0, err
	}
	return proto.Size(pb), nil
}

func (rc *RunContext) logger() *slog.Logger {
	if rc.Log != nil {
		return rc.Log
	}
	return slog.Default()
}

// Dataflow worker defaults that fit 128 MiB download shards: four in
// flight on a 16 GB n2-standard-4, and a disk for logs and the binary only
// (sources and shards are streamed, never staged whole).
const (
	defaultMachineType = "n2-standard-4"
	defaultDiskGB      = "50"
)

// checkDataflowFlags checks the prebuilt worker binary before anything is
// submitted, and fills in the worker defaults. (--async is igpt's own
// decision per stage: see submitPipeline and Options.Async.)
func checkDataflowFlags(log *slog.Logger) error {
	if f := flag.Lookup("worker_binary"); f != nil {
		if path := f.Value.String(); path != "" {
			if err := CheckWorkerBinary(path); err != nil {
				return err
			}
		} else {
			log.Warn("dataflow: no --worker_binary: Beam compiles one now, which takes minutes; build it once with infra/build.sh")
		}
	}
	for name, def := range map[string]string{"worker_machine_type": defaultMachineType, "disk_size_gb": defaultDiskGB} {
		if f := flag.Lookup(name); f != nil && (f.Value.String() == "" || f.Value.String() == "0") {
			flag.Set(name, def)
			log.Info("dataflow: worker default", name, def)
		}
	}
	return nil
}

// CheckWorkerBinary checks that path is what Dataflow's Go container can
// run: a static linux/amd64 executable (built with CGO_ENABLED=0).
func CheckWorkerBinary(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("dataflow: --worker_binary %s: %w (build it with infra/build.sh)", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return fmt.Errorf("dataflow: --worker_binary %s is for %v, not linux/amd64: build it with GOOS=linux GOARCH=amd64 (infra/build.sh)", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dataflow: --worker_binary %s is dynamically linked: build it with CGO_ENABLED=0 (infra/build.sh)", path)
		}
	}
	return nil
}
