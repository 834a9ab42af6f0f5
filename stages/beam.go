package stages

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/exec/optimized" // reflection-free DoFn calls
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"
)

// ErrDryRun is returned by a Beam stage whose Dataflow job was built and
// printed but, because of --dry_run, not submitted. No manifest is written.
var ErrDryRun = errors.New("dry run: the Dataflow job was printed, not submitted")

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

// runPipeline runs p on the named runner and returns the job id.
func runPipeline(ctx context.Context, runner string, p *beam.Pipeline) (string, error) {
	if !beam.Initialized() {
		beam.Init()
	}
	res, err := beam.Run(ctx, runner, p)
	if err != nil {
		if cause := rootCause(err.Error()); cause != "" {
			// The cause first: the runner's report (job, bundle, plan)
			// follows for whoever needs it.
			return "", fmt.Errorf("%s\n%s runner: %w", cause, runner, err)
		}
		return "", fmt.Errorf("%s runner: %w", runner, err)
	}
	if res == nil {
		if runner == "dataflow" && dryRunFlag() {
			return "", ErrDryRun
		}
		return "", nil
	}
	return res.JobID(), nil
}
