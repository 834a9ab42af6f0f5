package stages

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/exec/optimized" // reflection-free DoFn calls
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"
	"google.golang.org/protobuf/proto"
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

// runPipeline runs p on the named runner and returns the job id. It logs
// the size of the job's pipeline proto, which must stay small and must not
// grow with the dataset (lists travel in files, not in the graph), and
// records it in rc.GraphBytes for the manifest.
func runPipeline(ctx context.Context, rc *RunContext, p *beam.Pipeline) (string, error) {
	runner := rc.Runner
	if !beam.Initialized() {
		beam.Init()
	}
	if n, err := GraphBytes(p); err == nil {
		rc.GraphBytes = n
		rc.logger().Info("job graph", "runner", runner, "pipeline_proto_bytes", n)
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
