package stages

import (
	"flag"
	"os"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/igpt/igpt/internal/beamboot"
)

// TestMain lets this test binary serve as its own Beam worker: the scale
// tests start it through an external worker pool, as Dataflow's boot
// program starts igpt, and then beam.Init runs the harness and exits.
func TestMain(m *testing.M) {
	beamboot.MaybeBoot()
	flag.Parse()
	beamboot.TuneWorkerGC()
	beam.Init()
	code := m.Run()
	beamboot.RemoveEmptyWorkerBinary()
	if igptBin.dir != "" {
		os.RemoveAll(igptBin.dir)
	}
	os.Exit(code)
}
