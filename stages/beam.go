package stages

import (
	"context"
	"errors"
	"flag"
	"fmt"

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

// runPipeline runs p on the named runner and returns the job id.
func runPipeline(ctx context.Context, runner string, p *beam.Pipeline) (string, error) {
	if !beam.Initialized() {
		beam.Init()
	}
	res, err := beam.Run(ctx, runner, p)
	if err != nil {
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
