package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"github.com/igpt/igpt/internal/testutil"
)

// errGraphOnly stops a stage at beam.Run: graphBytesOf builds the job
// graph and measures it without running the job.
var errGraphOnly = errors.New("graph built, not run")

// graphBytesOf runs a stage's Run with inputs, with beam.Run replaced by a
// stub, and returns the size of the job graph it built (the first, for a
// stage that runs several jobs).
func graphBytesOf(t *testing.T, p *Plan, name string, inputs map[string]*Manifest) int {
	n, _ := graphOf(t, p, name, inputs)
	return n
}

// graphOf is graphBytesOf with the job graph itself.
func graphOf(t *testing.T, p *Plan, name string, inputs map[string]*Manifest) (int, *pipepb.Pipeline) {
	t.Helper()
	saved := beamRun
	var built *pipepb.Pipeline
	beamRun = func(_ context.Context, _ string, bp *beam.Pipeline) (beam.PipelineResult, error) {
		edges, _, err := bp.Build()
		if err != nil {
			return nil, err
		}
		if built, err = graphx.Marshal(edges, &graphx.Options{Environment: &pipepb.Environment{Urn: "beam:env:docker:v1"}}); err != nil {
			return nil, err
		}
		return nil, errGraphOnly
	}
	defer func() { beamRun = saved }()
	st, err := p.Step(name)
	if err != nil {
		t.Fatal(err)
	}
	rc := &RunContext{Config: p.Config, Key: st.Key, Dir: filepath.Join(t.TempDir(), name), Inputs: inputs, Runner: "prism", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if _, err := st.Stage.Run(context.Background(), rc); !errors.Is(err, errGraphOnly) {
		t.Fatalf("%s: Run returned %v before building its job", name, err)
	}
	if rc.GraphBytes <= 0 || built == nil {
		t.Fatalf("%s: no job graph measured", name)
	}
	return rc.GraphBytes, built
}

// checkFusionBreak asserts that in a stage's job graph every list the
// launcher wrote (a ListUnits or ListShards scope: one element that a
// DoFn expands into the units) reaches the per-unit work only through a
// Reshuffle. Without that break a runner fuses the expansion with the
// work, and one worker, in one bundle, processes every unit.
func checkFusionBreak(t *testing.T, name string, pipe *pipepb.Pipeline) {
	t.Helper()
	tr := pipe.GetComponents().GetTransforms()
	var reshuffles []string
	for _, x := range tr {
		if x.GetSpec().GetUrn() == graphx.URNReshuffle {
			reshuffles = append(reshuffles, x.GetUniqueName()+"/")
		}
	}
	under := func(n string, prefixes []string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) {
				return true
			}
		}
		return false
	}
	consumers := map[string][]string{} // PCollection → leaf transforms reading it
	for _, x := range tr {
		if len(x.GetSubtransforms()) == 0 {
			for _, in := range x.GetInputs() {
				consumers[in] = append(consumers[in], x.GetUniqueName())
			}
		}
	}
	lists := 0
	for _, x := range tr {
		n := x.GetUniqueName()
		i := max(strings.Index(n, "/ListUnits/"), strings.Index(n, "/ListShards/"))
		if len(x.GetSubtransforms()) > 0 || i < 0 {
			continue
		}
		scope := n[:strings.Index(n[i+1:], "/")+i+2]
		for _, out := range x.GetOutputs() {
			for _, c := range consumers[out] {
				if strings.HasPrefix(c, scope) {
					continue
				}
				lists++
				if !under(c, reshuffles) {
					t.Errorf("%s: %s reads the list expanded by %s directly, not through a Reshuffle: the runner fuses them and one worker does every unit", name, c, scope)
				}
			}
		}
	}
	if lists == 0 {
		t.Errorf("%s: no ListUnits or ListShards scope whose output leaves it: the graph's lists are not where this test looks", name)
	}
}

// grown copies the upstream manifests with every data file listed k times
// (hard links, so each name exists): a dataset k times larger in shards.
func grown(t *testing.T, inputs map[string]*Manifest, k int) map[string]*Manifest {
	t.Helper()
	out := map[string]*Manifest{}
	for name, m := range inputs {
		c := *m
		c.Files = nil
		for _, f := range m.Files {
			c.Files = append(c.Files, f)
			if f.Split == "" {
				continue
			}
			for i := 1; i < k; i++ {
				g := f
				g.Name = fmt.Sprintf("%s.copy%04d", f.Name, i)
				if err := os.Link(m.Path(f.Name), m.Path(g.Name)); err != nil && !os.IsExist(err) {
					t.Fatal(err)
				}
				c.Files = append(c.Files, g)
			}
		}
		out[name] = &c
	}
	return out
}

// maxGraphGrowth is how much a job graph may differ between a small and a
// large dataset: digits of counts that travel as options, never lists.
const maxGraphGrowth = 200

// TestGraphBytesFlatWithUnits: every Beam stage's job graph is the same
// size, within maxGraphGrowth bytes, for 10 and for 1000 units or shards.
// Lists (units, shard paths, keys) must travel in files the workers read,
// never in the graph: embedding one adds at least a path per entry.
func TestGraphBytesFlatWithUnits(t *testing.T) {
	t.Run("download", func(t *testing.T) {
		// ImageNet-shaped sources of 10 and 1000 class tars, one unit each.
		srv := testutil.FakeGCS(t, "data", "out")
		var sizes []int
		for _, classes := range []int{10, 1000} {
			prefix := fmt.Sprintf("in%d", classes)
			imageNetSource(t, srv, "data", prefix, classes, 1, 4)
			p := planFor(t, fmt.Sprintf("root: %s\ndataset: {name: imagenet, source: gs://data/%s}\ndownload: {resize: 16}\n", t.TempDir(), prefix))
			n, pipe := graphOf(t, p, "download", nil)
			checkFusionBreak(t, "download", pipe)
			checkFinishStep(t, "download", pipe)
			sizes = append(sizes, n)
		}
		checkFlat(t, "download", sizes, "10 and 1000 class tars")
	})
	// The other Beam stages read upstream shards: a tiny real run gives
	// their inputs, then the same inputs listed 100 times.
	root := t.TempDir()
	yaml := trainYAML(root, folderArchive(t, 8, nil), 6, 16, 4, 0.01) +
		"probe: {batch: 5, l2: [0.1], max_iter: 3}\n" +
		"vqvae: {hidden: 8, res_hidden: 4, res_blocks: 1, codes: 16, code_dim: 4, factor: 4, batch: 4, steps: 2, eval_every: 2, eval_images: 4, checkpoint_every: 2, threads: 2}\n"
	p, err := runUntil(t, yaml, "train", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, last := range []string{"vqvae-train", "probe-baselines"} {
		if err := p.RunUntil(context.Background(), last, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"palette", "quantize", "vqvae-encode", "probe-baselines", "probe"} {
		t.Run(name, func(t *testing.T) {
			st, err := p.Step(name)
			if err != nil {
				t.Fatal(err)
			}
			inputs, err := p.upstreamInputs(st, Options{}, true)
			if err != nil {
				t.Fatal(err)
			}
			small, pipe := graphOf(t, p, name, inputs)
			checkFusionBreak(t, name, pipe)
			checkFinishStep(t, name, pipe)
			large := graphBytesOf(t, p, name, grown(t, inputs, 100))
			checkFlat(t, name, []int{small, large}, "the upstream shards and those listed 100 times")
		})
	}
}

// checkFinishStep asserts that a job stage's graph has exactly one finish
// step, finishing that stage, and that the graph of a stage that is not one
// job (probe's first job) has none.
func checkFinishStep(t *testing.T, name string, pipe *pipepb.Pipeline) {
	t.Helper()
	steps := finishSteps(t, pipe)
	st, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	if isJobStage(st) {
		want = 1
	}
	if len(steps) != want {
		t.Errorf("%s: %d finish steps in its job graph, want %d", name, len(steps), want)
	}
	for tr, f := range steps {
		if f.Stage != name {
			t.Errorf("%s: the finish step %s finishes stage %s", name, tr, f.Stage)
		}
	}
}

func checkFlat(t *testing.T, name string, sizes []int, what string) {
	t.Helper()
	d := sizes[1] - sizes[0]
	t.Logf("%s: job graph %d and %d bytes for %s", name, sizes[0], sizes[1], what)
	if d > maxGraphGrowth || d < -maxGraphGrowth {
		t.Errorf("%s: job graph %d bytes, then %d for %s: it grows with the data", name, sizes[0], sizes[1], what)
	}
}
