package stages

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx"
	v1pb "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx/v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/util/protox"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/igpt/igpt/internal/testutil"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

var (
	infraOnce sync.Once
	infraErr  error
	infraOut  []byte
)

// repoRoot is the repository's root folder.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// buildInfra runs infra/build.sh once per test binary and returns the
// folder its binaries are in.
func buildInfra(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the flex template's binaries")
	}
	infraOnce.Do(func() {
		cmd := exec.Command("bash", filepath.Join(repoRoot(), "infra", "build.sh"))
		infraOut, infraErr = cmd.CombinedOutput()
	})
	if infraErr != nil {
		t.Fatalf("infra/build.sh: %v\n%s", infraErr, infraOut)
	}
	return filepath.Join(repoRoot(), "infra", "bin")
}

// TestFlexTemplate parses infra/Dockerfile and infra/metadata.json: every
// file the Dockerfile copies exists after infra/build.sh, the worker binary
// it ships is one Dataflow can run, the launcher it names is copied in, and
// every template parameter is one the launch script passes on.
func TestFlexTemplate(t *testing.T) {
	bin := buildInfra(t)
	root := repoRoot()
	f, err := os.Open(filepath.Join(root, "infra", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	copied := map[string]string{} // destination → source
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "COPY":
			if len(fields) != 3 {
				t.Fatalf("Dockerfile: %q: want COPY SRC DST", sc.Text())
			}
			if _, err := os.Stat(filepath.Join(root, fields[1])); err != nil {
				t.Errorf("Dockerfile copies %s, which does not exist after infra/build.sh: %v", fields[1], err)
			}
			copied[fields[2]] = fields[1]
		case "ENV":
			k, v, _ := strings.Cut(fields[1], "=")
			env[k] = v
		}
	}
	for _, k := range []string{"FLEX_TEMPLATE_GO_BINARY", "IGPT_WORKER_BINARY"} {
		if _, ok := copied[env[k]]; !ok {
			t.Errorf("Dockerfile: ENV %s=%q is not a file the image copies in", k, env[k])
		}
	}
	if err := CheckWorkerBinary(filepath.Join(bin, "igpt-worker")); err != nil {
		t.Errorf("the worker binary the image ships: %v", err)
	}
	if err := CheckWorkerBinary("/bin/sh"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("a dynamically linked worker binary is accepted: %v", err)
	}

	var meta struct {
		Name       string
		Parameters []struct {
			Name       string
			IsOptional bool
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "infra", "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &meta); err != nil || meta.Name == "" || len(meta.Parameters) == 0 {
		t.Fatalf("metadata.json: %v (name %q, %d parameters)", err, meta.Name, len(meta.Parameters))
	}
	launch, _ := os.ReadFile(filepath.Join(root, "infra", "launch.sh"))
	out, _ := exec.Command(filepath.Join(bin, "igpt"), "help", "run").CombinedOutput() // the flags a Flex Template launch passes to run
	for _, p := range meta.Parameters {
		if !strings.Contains(string(launch), "--"+p.Name+"=") && !strings.Contains(string(out), "--"+p.Name) {
			t.Errorf("metadata.json parameter %s is neither handled by launch.sh nor a flag of igpt", p.Name)
		}
	}
}

// TestFlexTemplateLaunchWritesJob runs infra/launch.sh the way a flex
// template launch does: one stage per launch (--command="stage download"),
// a config on gs://, every infra/metadata.json parameter, and
// --template_location, where the Dataflow runner writes the job instead of
// submitting it (Beam's Go runner returns a typed nil result then, on which
// igpt used to panic). The launch must exit 0, write a job spec naming the
// stage's transforms, the staged worker binary and the worker options the
// parameters set, and write no manifest (nothing ran); the job graph must
// end with the finish step that writes the stage's manifest, straight into
// the stage folder (no launcher stays to swap an attempt folder in).
func TestFlexTemplateLaunchWritesJob(t *testing.T) {
	bin := buildInfra(t)
	srv := testutil.FakeGCS(t, "data", "out")
	imageNetSource(t, srv, "data", "imagenet", 4, 2, 4)
	// The config's source is overridden by the source parameter.
	cfgYAML := "dataset: {name: imagenet, source: gs://data/elsewhere}\ndownload: {resize: 16}\n"
	putObject(srv, "out", "exp.yaml", []byte(cfgYAML))
	params := map[string]string{"command": "stage download", "config": "gs://out/exp.yaml", "root": "gs://out/root",
		"source": "gs://data/imagenet", "force": "false", "worker_machine_type": "n2-highmem-2", "disk_size_gb": "30", "max_num_workers": "7"}
	var meta struct{ Parameters []struct{ Name string } }
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "infra", "metadata.json"))
	if err != nil || json.Unmarshal(raw, &meta) != nil {
		t.Fatalf("metadata.json: %v", err)
	}
	args := []string{filepath.Join(repoRoot(), "infra", "launch.sh")}
	for _, p := range meta.Parameters {
		v, ok := params[p.Name]
		if !ok {
			t.Fatalf("metadata.json parameter %s is not exercised here: give it a value", p.Name)
		}
		args = append(args, "--"+p.Name+"="+v)
	}
	args = append(args, "--project=igpt-test", "--region=us-central1", "--staging_location=gs://out/staging",
		"--template_location=gs://out/templates/download.json")
	cmd := exec.Command("bash", args...)
	cmd.Env = append(os.Environ(), "IGPT_BINARY="+filepath.Join(bin, "igpt"), "IGPT_WORKER_BINARY="+filepath.Join(bin, "igpt-worker"))
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "panic") {
		t.Fatalf("launch.sh: %v\n%s", err, out)
	}
	obj, err := srv.GetObject("out", "templates/download.json")
	if err != nil {
		t.Fatalf("no job spec at the template location: %v\n%s", err, out)
	}
	// The spec names the pipeline and worker that the runner staged:
	// both must be there, the pipeline holding the stage's transforms.
	spec := string(obj.Content)
	staged := map[string]*fakestorage.Object{}
	for _, what := range []string{"model", "worker"} {
		m := regexp.MustCompile(`gs://out/(staging/[^"]*/` + what + `)"`).FindStringSubmatch(spec)
		if m == nil {
			t.Fatalf("the job spec names no staged %s:\n%.1500s", what, spec)
		}
		o, err := srv.GetObject("out", m[1])
		if err != nil {
			t.Fatalf("the job spec names %s, which was not staged: %v", m[1], err)
		}
		staged[what] = &o
	}
	var pipe pipepb.Pipeline
	if err := proto.Unmarshal(staged["model"].Content, &pipe); err != nil {
		t.Fatalf("staged model: %v", err)
	}
	names := ""
	for _, tr := range pipe.GetComponents().GetTransforms() {
		names += tr.GetUniqueName() + "\n"
	}
	if !strings.Contains(names, "download/") {
		t.Errorf("the staged pipeline has no download transforms:\n%s", names)
	}
	for _, want := range []string{`"machineType":\s*"n2-highmem-2"`, `"diskSizeGb":\s*30`, `"maxNumWorkers":\s*7`} {
		if !regexp.MustCompile(want).MatchString(spec) {
			t.Errorf("the job spec does not set %s", want)
		}
	}
	// The finish step: one, at the end, finishing the stage folder of the
	// planned key in place.
	cfg, err := ParseConfig([]byte(strings.Replace(cfgYAML, "gs://data/elsewhere", params["source"], 1) + "root: " + params["root"] + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	dl, _ := plan.Step("download")
	finish := finishSteps(t, &pipe)
	if len(finish) != 1 {
		t.Fatalf("the job graph has %d finish steps, want 1:\n%s", len(finish), names)
	}
	for name, f := range finish {
		if !strings.Contains(name, "Finish/WriteManifest") {
			t.Errorf("the finish step is %s", name)
		}
		if f.Stage != "download" || f.Key != dl.Key || f.Dir != dl.Dir || f.Final != dl.Dir || f.Swap || f.Runner != "dataflow" {
			t.Errorf("the finish step finishes %s %s in %s (stage folder %s, swap %v, runner %s); want download %s in %s",
				f.Stage, f.Key, f.Dir, f.Final, f.Swap, f.Runner, dl.Key, dl.Dir)
		}
	}
	if fi, err := os.Stat(filepath.Join(bin, "igpt-worker")); err != nil || int64(len(staged["worker"].Content)) != fi.Size() {
		t.Errorf("the staged worker is %d bytes, infra/bin/igpt-worker %v (%v)", len(staged["worker"].Content), fi.Size(), err)
	}
	if !strings.Contains(string(out), "template_location") {
		t.Errorf("igpt did not say the job was written, not run:\n%s", out)
	}
	objs, _, err := srv.ListObjectsWithOptions("out", fakestorage.ListOptions{Prefix: "root/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if strings.HasSuffix(o.Name, ManifestName) {
			t.Errorf("a launch that only wrote the job left a manifest: %s", o.Name)
		}
	}
}

// finishSteps decodes a job graph's finish steps (FinishStageFn ParDos),
// by transform name.
func finishSteps(t *testing.T, pipe *pipepb.Pipeline) map[string]*FinishSpec {
	t.Helper()
	out := map[string]*FinishSpec{}
	for _, tr := range pipe.GetComponents().GetTransforms() {
		if tr.GetSpec().GetUrn() != graphx.URNParDo {
			continue
		}
		var pardo pipepb.ParDoPayload
		if err := proto.Unmarshal(tr.GetSpec().GetPayload(), &pardo); err != nil {
			t.Fatalf("%s: %v", tr.GetUniqueName(), err)
		}
		var tp v1pb.TransformPayload
		if err := protox.DecodeBase64(string(pardo.GetDoFn().GetPayload()), &tp); err != nil || tp.GetEdge() == nil {
			continue // not a Go DoFn (a runner's own transform)
		}
		_, fn, _, _, _, err := graphx.DecodeMultiEdge(tp.GetEdge())
		if err != nil || fn == nil {
			continue
		}
		f, ok := fn.Recv.(*FinishStageFn)
		if !ok {
			continue
		}
		var spec FinishSpec
		if err := json.Unmarshal([]byte(f.Spec), &spec); err != nil {
			t.Fatalf("%s: the finish step's spec: %v", tr.GetUniqueName(), err)
		}
		out[tr.GetUniqueName()] = &spec
	}
	return out
}

// TestWorkflowChainsStages parses infra/workflow.yaml, the Cloud Workflows
// chain of flex template launches: its default stages are, in dependency
// order, every Beam stage a template launch can run from a fresh root (a
// job stage whose upstream stages are all job stages), it names every job
// stage, it passes exactly infra/metadata.json's parameters, and it waits
// for each stage by polling for its _MANIFEST.json and its job's state.
func TestWorkflowChainsStages(t *testing.T) {
	root := repoRoot()
	raw, err := os.ReadFile(filepath.Join(root, "infra", "workflow.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf map[string]any
	if err := yaml.Unmarshal(raw, &wf); err != nil {
		t.Fatalf("workflow.yaml: %v", err)
	}
	main, _ := wf["main"].(map[string]any)
	if main == nil {
		t.Fatal("workflow.yaml has no main workflow")
	}
	// The steps, by name, at any depth; and every call.
	steps := map[string]map[string]any{}
	var calls []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["call"]; ok {
				calls = append(calls, x)
			}
			for k, c := range x {
				if m, ok := c.(map[string]any); ok {
					steps[k] = m
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(wf)

	// The default stages, in order.
	var defaults []string
	var params []string
	for _, a := range asList(steps["init"]["assign"]) {
		for k, v := range a.(map[string]any) {
			switch k {
			case "stages":
				m := regexp.MustCompile(`\[([^\]]*)\]`).FindStringSubmatch(fmt.Sprint(v))
				if m == nil {
					t.Fatalf("init assigns stages %q: no default list", v)
				}
				for _, s := range strings.Split(m[1], ",") {
					defaults = append(defaults, strings.Trim(strings.TrimSpace(s), `"`))
				}
			case "parameters":
				for p := range v.(map[string]any) {
					params = append(params, p)
				}
			}
		}
	}
	cfg, err := ParseConfig([]byte("root: " + t.TempDir() + "\ndataset: {name: cifar10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	launchable := map[string]bool{}
	var want []string
	for _, st := range plan.Steps { // dependency order
		ok := isJobStage(st.Stage)
		for _, u := range st.Upstream {
			ok = ok && launchable[u.Stage.Name()]
		}
		if ok {
			launchable[st.Stage.Name()] = true
			want = append(want, st.Stage.Name())
		}
	}
	if strings.Join(defaults, ",") != strings.Join(want, ",") {
		t.Errorf("workflow.yaml's default stages are %v; the Beam stages a template launch runs from a fresh root, in order, are %v", defaults, want)
	}
	for _, n := range jobStageNames() {
		if !strings.Contains(string(raw), `"`+n+`"`) {
			t.Errorf("workflow.yaml does not name the Beam stage %s", n)
		}
	}

	// The parameters: those of metadata.json, no other.
	for _, v := range asList(steps["optional_parameters"]["for"].(map[string]any)["in"]) {
		params = append(params, v.(string))
	}
	var meta struct{ Parameters []struct{ Name string } }
	raw, err = os.ReadFile(filepath.Join(root, "infra", "metadata.json"))
	if err != nil || json.Unmarshal(raw, &meta) != nil {
		t.Fatalf("metadata.json: %v", err)
	}
	var names []string
	for _, p := range meta.Parameters {
		names = append(names, p.Name)
	}
	sort.Strings(params)
	sort.Strings(names)
	if strings.Join(params, ",") != strings.Join(names, ",") {
		t.Errorf("workflow.yaml passes the parameters %v; metadata.json has %v", params, names)
	}

	// The calls: the launch, and the polls of the manifest and the job.
	need := map[string]bool{
		"googleapis.dataflow.v1b3.projects.locations.flexTemplates.launch": false,
		"googleapis.storage.v1.objects.get":                                false,
		"googleapis.dataflow.v1b3.projects.locations.jobs.get":             false,
		"sys.sleep": false,
	}
	for _, c := range calls {
		name := fmt.Sprint(c["call"])
		if _, ok := need[name]; ok {
			need[name] = true
		}
		if name == "googleapis.dataflow.v1b3.projects.locations.flexTemplates.launch" {
			lp := fmt.Sprint(c["args"].(map[string]any)["body"].(map[string]any)["launchParameter"])
			if !strings.Contains(lp, "containerSpecGcsPath") || !strings.Contains(lp, "parameters") {
				t.Errorf("the launch does not name the template and its parameters: %s", lp)
			}
		}
	}
	for name, ok := range need {
		if !ok {
			t.Errorf("workflow.yaml never calls %s", name)
		}
	}
	if !strings.Contains(fmt.Sprint(steps["wait"]), ManifestName) {
		t.Errorf("the wait for a stage does not look for its %s: %v", ManifestName, steps["wait"])
	}
}

// asList is v as a YAML list (nil if it is not one).
func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
