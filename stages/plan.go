package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/igpt/igpt/internal/probe"
	"github.com/igpt/igpt/internal/storage"
)

// Step is one stage of a plan with its key and state.
type Step struct {
	Stage    Stage
	Params   any
	Key      string
	Dir      string
	Upstream []*Step
	Manifest *Manifest // nil until the stage is done

	lock *storage.Lock // held while the step runs
}

// Done reports whether the step's manifest exists.
func (s *Step) Done() bool { return s.Manifest != nil }

// Plan is a config's stages in dependency order.
type Plan struct {
	Config *Config
	Steps  []*Step
	byName map[string]*Step
	// ran is what the last run did with each stage it took, for Summary.
	ran map[string]outcome
}

// outcome is what a run did with one stage.
type outcome struct {
	action  string // "ran", "skipped (done)" or "failed"
	elapsed time.Duration
}

// NewPlan computes every registered stage's key for cfg, in dependency
// order, and reads which are done.
func NewPlan(ctx context.Context, cfg *Config) (*Plan, error) {
	return newPlan(ctx, cfg, registry)
}

func newPlan(ctx context.Context, cfg *Config, reg map[string]Stage) (*Plan, error) {
	p := &Plan{Config: cfg, byName: map[string]*Step{}}
	var visit func(name string, path []string) (*Step, error)
	visit = func(name string, path []string) (*Step, error) {
		if st, ok := p.byName[name]; ok {
			return st, nil
		}
		for _, n := range path {
			if n == name {
				return nil, fmt.Errorf("stages: dependency cycle %s -> %s", strings.Join(path, " -> "), name)
			}
		}
		s, ok := reg[name]
		if !ok {
			return nil, fmt.Errorf("stages: unknown stage %q", name)
		}
		st := &Step{Stage: s, Params: s.Params(cfg)}
		var upKeys []string
		ups := s.Upstream(cfg)
		for _, up := range ups {
			u, err := visit(up, append(path, name))
			if err != nil {
				return nil, err
			}
			st.Upstream = append(st.Upstream, u)
			upKeys = append(upKeys, u.Key)
		}
		key, err := Key(s, st.Params, ups, upKeys)
		if err != nil {
			return nil, err
		}
		st.Key = key
		st.Dir = storage.Join(cfg.Root, s.Name(), st.Key)
		if st.Manifest, err = readStepManifest(ctx, st); err != nil {
			return nil, err
		}
		p.byName[name] = st
		p.Steps = append(p.Steps, st)
		return st, nil
	}
	var names []string
	for n := range reg {
		names = append(names, n)
	}
	// Name order, each stage after its upstream stages in the order they
	// are listed (probe lists train before probe-baselines, so a first
	// run's baselines are not taken for ones fitted before the model),
	// with finetune, the longest final, last.
	sort.Slice(names, func(i, j int) bool {
		li, lj := names[i] == "finetune", names[j] == "finetune"
		if li != lj {
			return lj
		}
		return names[i] < names[j]
	})
	for _, name := range names {
		if _, err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Step returns the named step.
func (p *Plan) Step(name string) (*Step, error) {
	st, ok := p.byName[name]
	if !ok {
		var known []string
		for _, s := range p.Steps {
			known = append(known, s.Stage.Name())
		}
		return nil, fmt.Errorf("unknown stage %q (known: %s)", name, strings.Join(known, ", "))
	}
	return st, nil
}

// Options control a run.
type Options struct {
	Force bool // rerun stages even when done
	// DryRun prints the plan and runs nothing; with the dataflow runner it
	// also builds and prints (never submits) the job of each Beam stage
	// that would run and whose upstream outputs exist.
	DryRun bool
	Runner string // Beam runner; "" uses the config's
	// Async submits the next stage's Dataflow job and returns without
	// waiting for it (--async): the job finishes its stage itself, and the
	// stages after it are left for a later run. Dataflow only.
	Async bool
	Log   *slog.Logger
	Out   io.Writer // where the plan is printed; nil for none
	// Rerun holds the command-line flags (--root=…, --source=…) that
	// commands suggested in errors repeat, so that they name the same plan.
	Rerun string
}

func (o *Options) logger() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.Default()
}

// runner is the Beam runner of a run: the option's, else the config's.
func (p *Plan) runner(opt Options) string {
	if opt.Runner != "" {
		return opt.Runner
	}
	return p.Config.Runner
}

// Finals are the stages a whole run ends with; RunAll runs them and what
// they need under the config (tokens: palette needs no VQ-VAE, tokens:
// vqvae no palette). finetune is one when the config has its section.
var Finals = []string{"probe", "sample", "finetune"}

// finals are the Finals the plan has; a plan without any (a test's own
// registry) ends with every stage.
func (p *Plan) finals() []string {
	var out []string
	for _, f := range Finals {
		if f == "finetune" && !p.Config.hasFinetune {
			continue
		}
		if _, ok := p.byName[f]; ok {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		for _, st := range p.Steps {
			out = append(out, st.Stage.Name())
		}
	}
	return out
}

// RunAll runs the final stages and every stage they need that is not done
// (all with Force).
func (p *Plan) RunAll(ctx context.Context, opt Options) error {
	return p.RunUntil(ctx, "", opt)
}

// RunUntil runs the named stage ("": the Finals) and every stage it
// depends on, in order, skipping those that are done.
func (p *Plan) RunUntil(ctx context.Context, name string, opt Options) error {
	targets := []string{name}
	if name == "" {
		targets = p.finals()
	}
	need := map[*Step]bool{}
	var mark func(*Step)
	mark = func(s *Step) {
		need[s] = true
		for _, u := range s.Upstream {
			mark(u)
		}
	}
	for _, t := range targets {
		st, err := p.Step(t)
		if err != nil {
			return err
		}
		mark(st)
	}
	var names []string
	for _, s := range p.Steps {
		if need[s] {
			names = append(names, s.Stage.Name())
		}
	}
	return p.run(ctx, names, opt, false)
}

// RunOne runs one stage; its upstream stages must be done already.
func (p *Plan) RunOne(ctx context.Context, name string, opt Options) error {
	return p.run(ctx, []string{name}, opt, true)
}

func (p *Plan) run(ctx context.Context, names []string, opt Options, alone bool) error {
	if opt.Out != nil {
		p.Print(opt.Out, names, opt.Force)
	}
	runner := p.runner(opt)
	if opt.DryRun && runner != "dataflow" {
		return nil
	}
	if opt.Async && runner != "dataflow" && !opt.DryRun {
		return fmt.Errorf("--async needs --runner=dataflow: a %s job runs inside igpt and ends with it; without --async igpt waits for each stage", runner)
	}
	p.ran = map[string]outcome{}
	for i, name := range names {
		st, err := p.Step(name)
		if err != nil {
			return err
		}
		if st.Done() && !opt.Force {
			opt.logger().Info("stage done, skipping", "stage", name, "key", st.Key, "dir", st.Dir)
			p.ran[name] = outcome{action: "skipped (done)"}
			continue
		}
		start := time.Now()
		job, err := p.runStep(ctx, st, opt, alone)
		if opt.DryRun && errors.Is(err, ErrUpstreamMissing) {
			opt.logger().Info("dry run: job not built, upstream output missing", "stage", name, "err", err)
			continue
		}
		if errors.Is(err, ErrSubmitted) {
			// --async: one stage's job per invocation; what follows
			// waits for it.
			p.ran[name] = outcome{action: "submitted", elapsed: time.Since(start)}
			p.noteSubmitted(opt, st, job, names[i+1:])
			return nil
		}
		if err != nil {
			p.ran[name] = outcome{action: "failed", elapsed: time.Since(start)}
			return err
		}
		p.ran[name] = outcome{action: "ran", elapsed: time.Since(start)}
	}
	return nil
}

// noteSubmitted prints, after an --async submission, the job and the
// manifest it will write, and each later stage of the run that is not done
// and so waits for it.
func (p *Plan) noteSubmitted(opt Options, st *Step, job JobRef, rest []string) {
	lines := []string{submittedNote(st.Stage.Name(), job, storage.Join(st.Dir, ManifestName))}
	for _, n := range rest {
		if later, err := p.Step(n); err == nil && (!later.Done() || opt.Force) {
			lines = append(lines, notStartedNote(n, job.ID))
		}
	}
	for _, l := range lines {
		opt.logger().Info(l)
		if opt.Out != nil {
			fmt.Fprintln(opt.Out, l)
		}
	}
}

// detached reports whether a run's Beam jobs are left to finish their
// stages with no launcher waiting: --async, or jobs written to
// --template_location (a flex template launch), on Dataflow.
func (p *Plan) detached(opt Options) bool {
	return p.runner(opt) == "dataflow" && !opt.DryRun && (opt.Async || templateLocation() != "")
}

// upstreamRunning is, for a step whose upstream stage is not done because a
// job submitted earlier (--async) is still writing it (or its state cannot
// be read), the error saying to wait for that job; nil otherwise.
func upstreamRunning(ctx context.Context, st *Step) error {
	for _, u := range st.Upstream {
		if u.Done() {
			continue
		}
		m, err := readJobMarker(ctx, u.Dir)
		if err != nil || m == nil {
			continue
		}
		if state, err := jobWait.state(ctx, m.JobRef); err == nil && (state == jobDone || jobEnded(state)) {
			continue // over: the upstream is simply not done
		}
		return fmt.Errorf("stages: %s needs %s output %s, which %s (submitted %s) writes: upstream not finished yet; rerun when job %s is done: %w",
			st.Stage.Name(), u.Stage.Name(), u.Dir, m.JobRef, m.Submitted.Format(time.RFC3339), m.ID, ErrUpstreamMissing)
	}
	return nil
}

// runStep runs one stage. After an --async submission it returns
// ErrSubmitted and the job.
func (p *Plan) runStep(ctx context.Context, st *Step, opt Options, alone bool) (JobRef, error) {
	name := st.Stage.Name()
	if !opt.DryRun {
		if err := upstreamRunning(ctx, st); err != nil {
			return JobRef{}, err
		}
	}
	inputs, err := p.upstreamInputs(st, opt, alone)
	if err != nil {
		return JobRef{}, err
	}
	log := opt.logger().With("stage", name, "key", st.Key)
	runner := p.runner(opt)
	detached := p.detached(opt)
	if detached && !isJobStage(st.Stage) {
		return JobRef{}, detachedRefusal(name)
	}
	// The stage folder is ours while the stage runs: another run of the
	// same stage and key waits here, then finds it done. A dry run writes
	// nothing and takes no lock. A detached run holds it only until its
	// job is submitted (or written to --template_location).
	done := st.Done()
	if !opt.DryRun {
		lock, err := storage.AcquireLock(ctx, lockPath(st.Dir), lockOptions(log))
		if err != nil {
			return JobRef{}, fmt.Errorf("stages: %s: %w", name, err)
		}
		defer func() {
			st.lock = nil
			if err := lock.Release(context.WithoutCancel(ctx)); err != nil {
				log.Warn("stage lock not released", "err", err)
			}
		}()
		if err := recoverSwap(ctx, st.Dir, log); err != nil {
			return JobRef{}, fmt.Errorf("stages: %s: %w", name, err)
		}
		m, err := readStepManifest(ctx, st)
		if err != nil {
			return JobRef{}, err
		}
		if m != nil && !opt.Force {
			log.Info("stage done by another run, skipping", "dir", st.Dir)
			st.Manifest = m
			return JobRef{}, nil
		}
		// A Dataflow job submitted earlier may still write the folder.
		if err := checkJobMarker(ctx, st.Dir, log); err != nil {
			return JobRef{}, fmt.Errorf("stages: %s: %w", name, err)
		}
		done = m != nil
		st.lock = lock
	}
	// A resumable stage continues in its own folder from what an
	// interrupted run left. Everything else (and --force) runs in an
	// attempt folder beside the stage folder, swapped in only on success:
	// a failing run loses no finished output. A detached job with no
	// finished output to protect writes the stage folder itself: no
	// launcher stays to swap, and its manifest, written last, marks it
	// done (stages/finish.go).
	dir := attemptDir(st.Dir)
	if r, ok := st.Stage.(Resumable); ok && r.Resumable() && !opt.Force {
		log.Info("stage resumes from its own checkpoints if any", "dir", st.Dir)
		dir = st.Dir
	}
	if opt.DryRun || detached && !done {
		dir = st.Dir
	}
	if dir != st.Dir || detached {
		// Clear the attempt folder, and the stage folder too unless it
		// holds a finished output: without a manifest it holds leftovers
		// of an interrupted run.
		clear := []string{dir}
		if !done && dir != st.Dir {
			clear = append(clear, st.Dir)
		}
		for _, d := range clear {
			if err := storage.RemoveAll(ctx, d); err != nil {
				return JobRef{}, fmt.Errorf("stages: %s: clear %s: %w", name, d, err)
			}
		}
	}
	start := time.Now()
	rc := &RunContext{Config: p.Config, Key: st.Key, Dir: dir, Inputs: inputs, Runner: runner, Log: log,
		Final: st.Dir, Started: start, Detached: detached}
	log.Info("stage starting", "dir", dir, "runner", runner)
	if !opt.DryRun {
		writeRunning(ctx, st, dir, start, log)
	}
	out, err := st.Stage.Run(ctx, rc)
	if errors.Is(err, ErrDryRun) {
		log.Info("stage not submitted (--dry_run); no manifest written", "pipeline_proto_bytes", rc.GraphBytes)
		return JobRef{}, nil
	}
	if errors.Is(err, ErrTemplateWritten) {
		log.Info("stage written as a Dataflow job to --template_location, not run here: the job writes the manifest when it ends",
			"dir", dir, "manifest", storage.Join(st.Dir, ManifestName), "pipeline_proto_bytes", rc.GraphBytes)
		return JobRef{}, nil
	}
	if errors.Is(err, ErrSubmitted) {
		job := JobRef{ID: rc.JobID, Runner: runner, Project: flagValue("project"), Region: flagValue("region")}
		log.Info("stage submitted (--async): its job writes the manifest when it ends", "job", rc.JobID, "manifest", storage.Join(st.Dir, ManifestName))
		return job, err
	}
	if err != nil {
		if dir != st.Dir {
			// What a failed attempt wrote is of no use to the next run,
			// which clears it anyway: leave nothing behind.
			if rerr := storage.RemoveAll(context.WithoutCancel(ctx), dir); rerr != nil {
				log.Warn("attempt folder not removed", "dir", dir, "err", rerr)
			}
		}
		return JobRef{}, fmt.Errorf("stage %s: %w", name, err)
	}
	return JobRef{}, p.publish(ctx, st, rc, out, start)
}

// upstreamInputs returns the manifests of the step's upstream stages, or an
// error naming the command that makes a missing one.
func (p *Plan) upstreamInputs(st *Step, opt Options, alone bool) (map[string]*Manifest, error) {
	inputs := map[string]*Manifest{}
	for _, u := range st.Upstream {
		if !u.Done() {
			how := strings.TrimSpace("run it first: igpt stage " + u.Stage.Name() + " " + p.Config.Path + " " + opt.Rerun)
			if !alone {
				how = "it did not finish"
			}
			return nil, fmt.Errorf("stages: %s needs %s output %s (no %s there): %w; %s",
				st.Stage.Name(), u.Stage.Name(), u.Dir, ManifestName, ErrUpstreamMissing, how)
		}
		inputs[u.Stage.Name()] = u.Manifest
	}
	return inputs, nil
}

// publish finishes a stage run: the manifest of a stage the launcher ran
// is made and written into rc.Dir here; that of a Beam stage was written
// by its job's finish step (out.Manifest), and is only verified. Then an
// attempt folder is swapped in, and the manifest read back as downstream
// stages will see it.
func (p *Plan) publish(ctx context.Context, st *Step, rc *RunContext, out *Output, start time.Time) error {
	name, dir := st.Stage.Name(), rc.Dir
	m := out.Manifest
	if m != nil {
		// The job wrote it: the launcher never writes a second one.
		if m.Stage != name || m.Key != st.Key {
			return fmt.Errorf("stage %s: the job wrote a manifest for %s/%s, not %s/%s", name, m.Stage, m.Key, name, st.Key)
		}
		if err := m.checkFiles(ctx); err != nil {
			return fmt.Errorf("stage %s: the job's manifest: %w", name, err)
		}
	} else {
		var err error
		if m, err = newManifest(st.Stage, p.Config, st.Key, rc.Inputs, out, rc.Runner, rc.GraphBytes, start, time.Now(), dir); err != nil {
			return err
		}
		if err := commitManifest(ctx, m); err != nil {
			return fmt.Errorf("stage %s: %w", name, err)
		}
	}
	if dir != st.Dir {
		if err := st.lock.Check(ctx); err != nil {
			return fmt.Errorf("stage %s: not swapping %s in: %w", name, dir, err)
		}
		if err := swapIn(ctx, dir, st.Dir); err != nil {
			return fmt.Errorf("stage %s: %w", name, err)
		}
	}
	// Downstream stages see the manifest as any later run will: decoded
	// from its JSON.
	var err error
	if st.Manifest, err = ReadManifest(ctx, st.Dir); err != nil {
		return fmt.Errorf("stage %s: %w", name, err)
	}
	rc.Log.Info("stage finished", "records", m.Records(""), "files", len(m.Files), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// newManifest makes the manifest of stage s's output out, written into
// dir under key: the one code path for every manifest, used by publish in
// the launcher and by a Beam stage's finish step on a worker. graphBytes,
// when known, is recorded as meta.graph_bytes; the inputs are the upstream
// outputs s read under cfg, in its Upstream order.
func newManifest(s Stage, cfg *Config, key string, inputs map[string]*Manifest, out *Output, runner string, graphBytes int, started, finished time.Time, dir string) (*Manifest, error) {
	name := s.Name()
	if graphBytes > 0 {
		if out.Meta == nil {
			out.Meta = map[string]any{}
		}
		out.Meta["graph_bytes"] = graphBytes
	}
	params, err := canonicalJSON(s.Params(cfg))
	if err != nil {
		return nil, fmt.Errorf("stage %s: encode config: %w", name, err)
	}
	m := &Manifest{
		Stage: name, Version: s.Version(), Key: key, Config: json.RawMessage(params),
		Files: out.Files, Meta: out.Meta, CodeVersion: CodeVersion(), Runner: runner, JobID: out.JobID,
		Started: started.UTC(), Finished: finished.UTC(), Dir: dir,
	}
	for _, up := range s.Upstream(cfg) {
		in := inputs[up]
		if in == nil {
			return nil, fmt.Errorf("stage %s: no %s input to record in the manifest", name, up)
		}
		m.Inputs = append(m.Inputs, Input{Stage: up, Key: in.Key})
	}
	return m, nil
}

// commitManifest writes m into its folder, atomically, after checking that
// every file it lists exists: a manifest lists only files that exist.
func commitManifest(ctx context.Context, m *Manifest) error {
	if err := m.checkFiles(ctx); err != nil {
		return err
	}
	if err := writeManifest(ctx, m); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// Print writes the plan: each stage, its key, and what a run would do.
func (p *Plan) Print(w io.Writer, names []string, force bool) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STAGE\tKEY\tUPSTREAM\tACTION\tDIR\n")
	for _, st := range p.Steps {
		action := "-"
		switch {
		case !want[st.Stage.Name()]:
			if st.Done() {
				action = "done"
			}
		case st.Done() && !force:
			action = "skip (done)"
		case st.Done():
			action = "rerun (--force)"
		default:
			action = "run"
		}
		var ups []string
		for _, u := range st.Upstream {
			ups = append(ups, u.Stage.Name()+"@"+u.Key)
		}
		if len(ups) == 0 {
			ups = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.Stage.Name(), st.Key, strings.Join(ups, ","), action, st.Dir)
	}
	tw.Flush()
}

// Status writes each stage's state (done, running with its lock holder
// and progress, or not run), key, record counts per split and bytes, with
// notes on a root that does not exist and on finished downloads of the
// same dataset from another source.
func (p *Plan) Status(ctx context.Context, w io.Writer) {
	if note := p.rootNote(); note != "" {
		fmt.Fprintln(w, note)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STAGE\tSTATE\tKEY\tRECORDS\tBYTES\tFINISHED\n")
	defer func() {
		tw.Flush()
		for _, n := range p.otherSourceNotes(ctx) {
			fmt.Fprintln(w, n)
		}
	}()
	for _, st := range p.Steps {
		if !st.Done() {
			state := "not run"
			if r := p.runningState(ctx, st); r != "" {
				state = r
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\n", st.Stage.Name(), state, st.Key)
			continue
		}
		m := st.Manifest
		perSplit := map[string]int64{}
		var bytes int64
		for _, f := range m.Files {
			if f.Split != "" {
				perSplit[f.Split] += f.Records
			}
			bytes += f.Bytes
		}
		var splits []string
		for s := range perSplit {
			splits = append(splits, s)
		}
		sort.Strings(splits)
		var recs []string
		for _, s := range splits {
			recs = append(recs, fmt.Sprintf("%s=%d", s, perSplit[s]))
		}
		if len(recs) == 0 {
			recs = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\tdone\t%s\t%s\t%d\t%s\n", st.Stage.Name(), st.Key, strings.Join(recs, " "), bytes, m.Finished.Format(time.RFC3339))
	}
}

// Summary writes, after a run, a table of the stages it took (state, key,
// time, headline figure read from the manifests) and the paths of the
// reports and pictures they wrote.
func (p *Plan) Summary(ctx context.Context, w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nSTAGE\tKEY\tSTATE\tTIME\tRESULT\n")
	var outputs []string
	for _, st := range p.Steps {
		o, took := p.ran[st.Stage.Name()]
		if !took {
			continue
		}
		elapsed, result := o.elapsed, "-"
		if st.Done() {
			m := st.Manifest
			if o.action != "failed" {
				elapsed = m.Finished.Sub(m.Started)
			}
			result = headline(ctx, m)
			for _, f := range m.Files {
				if strings.HasSuffix(f.Name, ".png") || strings.HasSuffix(f.Name, ".md") {
					outputs = append(outputs, m.Path(f.Name))
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.Stage.Name(), st.Key, o.action, formatElapsed(elapsed), result)
	}
	tw.Flush()
	if len(outputs) > 0 {
		fmt.Fprintf(w, "\nReports and pictures:\n  %s\n", strings.Join(outputs, "\n  "))
	}
}

func formatElapsed(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// headline is a stage's main figure, from its manifest (and for probe, its
// report): what a reader looks for first.
func headline(ctx context.Context, m *Manifest) string {
	num := func(k string) (float64, bool) {
		v, ok := m.Meta[k].(float64)
		return v, ok
	}
	switch m.Stage {
	case "download", "quantize":
		return fmt.Sprintf("%d records", m.Records(""))
	case "palette":
		if v, ok := num("mse_per_pixel"); ok {
			return fmt.Sprintf("palette MSE %.1f per pixel", v)
		}
	case "train":
		if v, ok := num("final_val_loss"); ok {
			steps, _ := num("steps")
			h := fmt.Sprintf("val loss %.3f nats/token after %.0f steps", v, steps)
			if min, ok := num("minutes"); ok {
				h += fmt.Sprintf(" (%.1f min of training)", min)
			}
			return h
		}
	case "probe":
		return probeHeadline(ctx, m)
	case "probe-baselines":
		return baselinesHeadline(ctx, m)
	case "vqvae-encode":
		if out, err := ReadVQVAEEncodeOutput(m); err == nil {
			return fmt.Sprintf("%d records, code perplexity %.0f (train)", m.Records(""), out.Perplexity["train"])
		}
	case "sample":
		n := 0
		for _, f := range m.Files {
			if strings.HasSuffix(f.Name, ".png") {
				n++
			}
		}
		return fmt.Sprintf("%d pictures", n)
	case "finetune":
		if out, err := ReadFinetuneOutput(m); err == nil {
			return fmt.Sprintf("%s: %.1f%% test (best val at step %d of %d, stopped by %s)", out.Init, 100*out.TestAcc, out.BestStep, out.Steps, out.Stopped)
		}
	case "vqvae-train":
		// Version 2 evaluates on val and reads test once at the end;
		// version 1 outputs evaluated on test (no eval_split in meta).
		var parts []string
		if v, ok := num("test_mse_255"); ok {
			psnr, _ := num("test_psnr")
			parts = append(parts, fmt.Sprintf("test reconstruction MSE %.1f (PSNR %.2f dB)", v, psnr))
		} else if v, ok := num("eval_mse_255"); ok {
			psnr, _ := num("eval_psnr")
			parts = append(parts, fmt.Sprintf("reconstruction MSE %.1f (PSNR %.2f dB)", v, psnr))
		}
		if min, ok := num("minutes"); ok {
			parts = append(parts, fmt.Sprintf("%.1f min of training", min))
		}
		if len(parts) > 0 {
			return strings.Join(parts, ", ")
		}
	}
	return "-"
}

// probeHeadline is the best layer's test accuracy and its margin over raw
// pixels, from the probe's report.
func probeHeadline(ctx context.Context, m *Manifest) string {
	b, err := storage.ReadFile(ctx, m.Path(ReportJSON))
	if err != nil {
		return "-"
	}
	var rep struct {
		Summary *probe.Summary `json:"summary"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep.Summary == nil {
		return "-"
	}
	s := rep.Summary
	out := fmt.Sprintf("best %s %.1f%% test", s.Best.Name, 100*s.Best.TestAcc)
	if s.MarginOverRawPixels != nil {
		out += fmt.Sprintf(", %s raw pixels (%.1f%%)", probe.MarginPhrase(*s.MarginOverRawPixels), 100*s.Best.TestAcc-*s.MarginOverRawPixels)
	}
	if s.MarginOverInputPixels != nil {
		out += fmt.Sprintf(", %s them at the input resolution", probe.MarginPhrase(*s.MarginOverInputPixels))
	}
	return out
}

// baselinesHeadline is each baseline row's test accuracy.
func baselinesHeadline(ctx context.Context, m *Manifest) string {
	b, err := storage.ReadFile(ctx, m.Path(BaselinesFile))
	if err != nil {
		return "-"
	}
	var out ProbeBaselinesOutput
	if json.Unmarshal(b, &out) != nil || len(out.Rows) == 0 {
		return "-"
	}
	var parts []string
	for _, r := range out.Rows {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", r.Name, 100*r.TestAcc))
	}
	return strings.Join(parts, ", ")
}
