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
	Log    *slog.Logger
	Out    io.Writer // where the plan is printed; nil for none
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
	p.ran = map[string]outcome{}
	for _, name := range names {
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
		err = p.runStep(ctx, st, opt, alone)
		if opt.DryRun && errors.Is(err, ErrUpstreamMissing) {
			opt.logger().Info("dry run: job not built, upstream output missing", "stage", name, "err", err)
			continue
		}
		if err != nil {
			p.ran[name] = outcome{action: "failed", elapsed: time.Since(start)}
			return err
		}
		p.ran[name] = outcome{action: "ran", elapsed: time.Since(start)}
	}
	return nil
}

func (p *Plan) runStep(ctx context.Context, st *Step, opt Options, alone bool) error {
	name := st.Stage.Name()
	inputs, err := p.upstreamInputs(st, opt, alone)
	if err != nil {
		return err
	}
	log := opt.logger().With("stage", name, "key", st.Key)
	runner := p.runner(opt)
	// The stage folder is ours while the stage runs: another run of the
	// same stage and key waits here, then finds it done. A dry run writes
	// nothing and takes no lock.
	done := st.Done()
	if !opt.DryRun {
		lock, err := storage.AcquireLock(ctx, lockPath(st.Dir), lockOptions(log))
		if err != nil {
			return fmt.Errorf("stages: %s: %w", name, err)
		}
		defer func() {
			st.lock = nil
			if err := lock.Release(context.WithoutCancel(ctx)); err != nil {
				log.Warn("stage lock not released", "err", err)
			}
		}()
		if err := recoverSwap(ctx, st.Dir, log); err != nil {
			return fmt.Errorf("stages: %s: %w", name, err)
		}
		m, err := readStepManifest(ctx, st)
		if err != nil {
			return err
		}
		if m != nil && !opt.Force {
			log.Info("stage done by another run, skipping", "dir", st.Dir)
			st.Manifest = m
			return nil
		}
		done = m != nil
		st.lock = lock
	}
	// A resumable stage continues in its own folder from what an
	// interrupted run left. Everything else (and --force) runs in an
	// attempt folder beside the stage folder, swapped in only on success:
	// a failing run loses no finished output.
	dir := attemptDir(st.Dir)
	if r, ok := st.Stage.(Resumable); ok && r.Resumable() && !opt.Force {
		log.Info("stage resumes from its own checkpoints if any", "dir", st.Dir)
		dir = st.Dir
	}
	if opt.DryRun {
		dir = st.Dir
	}
	if dir != st.Dir {
		// Clear the attempt folder, and the stage folder too unless it
		// holds a finished output: without a manifest it holds leftovers
		// of an interrupted run.
		clear := []string{dir}
		if !done {
			clear = append(clear, st.Dir)
		}
		for _, d := range clear {
			if err := storage.RemoveAll(ctx, d); err != nil {
				return fmt.Errorf("stages: %s: clear %s: %w", name, d, err)
			}
		}
	}
	rc := &RunContext{Config: p.Config, Key: st.Key, Dir: dir, Inputs: inputs, Runner: runner, Log: log}
	log.Info("stage starting", "dir", dir, "runner", runner)
	start := time.Now()
	if !opt.DryRun {
		writeRunning(ctx, st, dir, start, log)
	}
	out, err := st.Stage.Run(ctx, rc)
	if errors.Is(err, ErrDryRun) {
		log.Info("stage not submitted (--dry_run); no manifest written", "pipeline_proto_bytes", rc.GraphBytes)
		return nil
	}
	if errors.Is(err, ErrTemplateWritten) {
		log.Info("stage written as a Dataflow job to --template_location, not run here; no manifest written", "pipeline_proto_bytes", rc.GraphBytes)
		return nil
	}
	if err != nil {
		if dir != st.Dir {
			// What a failed attempt wrote is of no use to the next run,
			// which clears it anyway: leave nothing behind.
			if rerr := storage.RemoveAll(context.WithoutCancel(ctx), dir); rerr != nil {
				log.Warn("attempt folder not removed", "dir", dir, "err", rerr)
			}
		}
		return fmt.Errorf("stage %s: %w", name, err)
	}
	return p.publish(ctx, st, rc, out, start)
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

// publish writes the manifest of a stage run into rc.Dir, swaps an attempt
// folder in, and reads the manifest back as downstream stages will see it.
func (p *Plan) publish(ctx context.Context, st *Step, rc *RunContext, out *Output, start time.Time) error {
	name, dir, runner := st.Stage.Name(), rc.Dir, rc.Runner
	if rc.GraphBytes > 0 {
		if out.Meta == nil {
			out.Meta = map[string]any{}
		}
		out.Meta["graph_bytes"] = rc.GraphBytes
	}
	params, err := canonicalJSON(st.Params)
	if err != nil {
		return err
	}
	m := &Manifest{
		Stage: name, Version: st.Stage.Version(), Key: st.Key, Config: json.RawMessage(params),
		Files: out.Files, Meta: out.Meta, CodeVersion: CodeVersion(), Runner: runner, JobID: out.JobID,
		Started: start.UTC(), Finished: time.Now().UTC(), Dir: dir,
	}
	for _, u := range st.Upstream {
		m.Inputs = append(m.Inputs, Input{Stage: u.Stage.Name(), Key: u.Key})
	}
	// A manifest lists only files that exist.
	if err := m.checkFiles(ctx); err != nil {
		return fmt.Errorf("stage %s: %w", name, err)
	}
	if err := writeManifest(ctx, m); err != nil {
		return fmt.Errorf("stage %s: write manifest: %w", name, err)
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
	if st.Manifest, err = ReadManifest(ctx, st.Dir); err != nil {
		return fmt.Errorf("stage %s: %w", name, err)
	}
	rc.Log.Info("stage finished", "records", m.Records(""), "files", len(m.Files), "elapsed", time.Since(start).Round(time.Millisecond))
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
