package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/igpt/igpt/internal/storage"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/stages"
	"github.com/igpt/igpt/tools"
)

// command is one row of the command table, the single list that dispatch,
// `igpt help`, `igpt help NAME` (and NAME --help), the package doc and the
// README's command table are drawn from.
type command struct {
	name    string
	args    string // positional arguments as shown in usage
	nargs   int    // how many positional arguments it takes
	summary string // one line: the global usage, the README table
	detail  string // a paragraph for `igpt help NAME`
	flags   []flagDoc
	run     func(ctx context.Context, args []string) error
}

// flagDoc is a flag as one command uses it: what it means there and, when
// it differs from the flag's, its default for that command. A numeric flag
// that stands for a config key names it (key): its value must lie in that
// key's range (docs/config-ranges.md), checked before the command runs.
type flagDoc struct {
	name, usage, def, key string
}

// Flags every command accepts, and Beam's flags for the commands that run
// pipelines (with their meaning in igpt's words).
var (
	globalFlags = []flagDoc{
		{name: "log_level", usage: "debug, info, warn or error; Beam's own log lines show only at debug"},
	}
	beamFlags = []flagDoc{
		{name: "runner", usage: "Beam runner: prism (in-process), direct or dataflow; default: the config's runner (prism)"},
		{name: "dry_run", usage: "print the plan and run nothing; with --runner=dataflow also build and print each runnable stage's job without submitting it"},
		{name: "async", usage: "dataflow: submit the next stage's job, print its id and the _MANIFEST.json it writes when done, and return without waiting; the stages after it are left for a rerun once that job is done (without --async igpt waits, polling for the manifest and the job's state)"},
		{name: "worker_processes", usage: "prism/direct: run Beam workers as separate processes through an external worker pool, as Dataflow does; ends with a peak memory line"},
		{name: "project", usage: "dataflow: Google Cloud project"},
		{name: "region", usage: "dataflow: region"},
		{name: "staging_location", usage: "dataflow: gs:// folder for staged files"},
		{name: "worker_binary", usage: "dataflow: this program built with CGO_ENABLED=0 GOOS=linux GOARCH=amd64 (see infra/README.md)"},
	}
	planFlags = []flagDoc{
		{name: "root", usage: "output root, overriding the config's root (a local folder or gs://bucket/prefix); a relative root is taken from the current directory"},
		{name: "source", usage: "override dataset.source: a local file or folder, file://, gs:// or an https:// mirror"},
	}
	sampleFlags = []flagDoc{
		{name: "out", usage: "PNG file to write (required)"},
		{name: "n", usage: "unconditional samples, or completions of --complete", def: "16", key: "sample.unconditional"},
		{name: "complete", usage: "a PNG or JPEG picture (centre-cropped, resized and quantized with the run's palette) whose bottom part the model completes"},
		{name: "keep", usage: "with --complete: fraction of the picture's rows kept", key: "sample.keep"},
		{name: "temperature", usage: "softmax temperature", key: "sample.temperature"},
		{name: "top_k", usage: "keep the k most likely tokens (0: all)", key: "sample.top_k"},
		{name: "top_p", usage: "nucleus mass (0: off)", key: "sample.top_p"},
		{name: "seed", usage: "random seed", key: "sample.seed"},
		{name: "scale", usage: "pixel magnification", key: "sample.scale"},
	}
)

var commands []command

func init() {
	// Set here, not in the declaration: the run functions print help,
	// which reads the table.
	commands = []command{
		{name: "run", args: "CONFIG", nargs: 1, run: runCmd,
			summary: "run every stage not yet done (with --until, only STAGE and what it needs), then print a summary",
			detail: "Plans all stages (each keyed by a hash of its config section and its upstream keys), skips those whose " +
				"_MANIFEST.json exists, runs the rest in order, and ends with a table of each stage's time and headline figure " +
				"and the paths of the report and pictures.",
			flags: slices.Concat([]flagDoc{{name: "until", usage: "stop after this stage and the stages it needs"},
				{name: "force", usage: "rerun stages even when done"}}, planFlags, beamFlags)},
		{name: "stage", args: "NAME CONFIG", nargs: 2, run: stageCmd,
			summary: "run one stage; its upstream stages must be done",
			detail:  "Runs the named stage (see `igpt stages`) alone; an error names the command that makes a missing upstream output.",
			flags:   slices.Concat([]flagDoc{{name: "force", usage: "rerun the stage even when done"}}, planFlags, beamFlags)},
		{name: "status", args: "CONFIG", nargs: 1, run: statusCmd,
			summary: "each stage: done or not, key, records per split, bytes, finish time",
			flags:   planFlags},
		{name: "inspect", args: "PATH", nargs: 1, run: inspectCmd,
			summary: "a shard (local or gs://): header, record count, first records; a stage folder: its manifest",
			detail:  "Every frame of a shard is CRC-checked while counting.",
			flags:   []flagDoc{{name: "n", usage: "records to print"}}},
		{name: "show", args: "tokens PATH", nargs: 2, run: showCmd,
			summary: "draw the first records of a quantize or vqvae-encode folder (or a Tokens shard), each original beside its tokens decoded by the palette or the VQ-VAE",
			flags: []flagDoc{{name: "out", usage: "PNG file to write (required)"}, {name: "n", usage: "images to draw (try 64)", key: "sample.images"},
				{name: "scale", usage: "pixel magnification", key: "sample.scale"}}},
		{name: "sample", args: "RUN", nargs: 1, run: sampleCmd,
			summary: "from a train stage folder: --n unconditional samples, or --n completions of your own picture (--complete)",
			flags:   sampleFlags},
		{name: "export-hf", args: "RUN", nargs: 1, run: exportHFCmd,
			summary: "a train folder's final weights as a Hugging Face ImageGPT model (config.json + model.safetensors)",
			detail:  "Zero biases are written where that layout has them.",
			flags:   []flagDoc{{name: "out", usage: "folder to write", def: "RUN/hf"}}},
		{name: "import-hf", args: "DIR", nargs: 1, run: importHFCmd,
			summary: "a Hugging Face ImageGPT folder (e.g. published iGPT weights) as an igpt checkpoint",
			flags:   []flagDoc{{name: "out", usage: ".safetensors checkpoint to write (required)"}}},
		{name: "serve", nargs: 0, run: serveCmd,
			summary: "see every run under --root in a browser: live curves, runs side by side, samples at every kept step, complete your own picture",
			detail: "Serves the root read-only (completions are kept in memory) on --addr, 127.0.0.1:8080 by default; " +
				"a non-loopback address requires the access token printed with the URL. Press Ctrl-C to stop.",
			flags: serveFlags},
		{name: "stages", nargs: 0, run: stagesCmd, summary: "list the stages in the order a run takes them"},
		{name: "help", args: "[COMMAND]", nargs: -1, run: helpCmd, summary: "this list, or one command's arguments and flags"},
	}
}

func lookup(name string) (*command, bool) {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i], true
		}
	}
	return nil, false
}

func commandNames() []string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	return names
}

// dispatch runs the command args[0] with the rest as its arguments, after
// checking the argument count, that every igpt flag given applies to it,
// and applying its own flag defaults.
func dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		printUsage(os.Stderr)
		return fmt.Errorf("no command given")
	}
	c, ok := lookup(args[0])
	if !ok {
		return fmt.Errorf("unknown command %q (%s; `igpt help` lists them)", args[0], strings.Join(commandNames(), ", "))
	}
	args = args[1:]
	if c.nargs >= 0 && len(args) != c.nargs {
		return fmt.Errorf("%s: want %s, got %q (igpt help %s)", c.name, c.args, strings.Join(args, " "), c.name)
	}
	if err := c.checkFlags(); err != nil {
		return err
	}
	return c.run(ctx, args)
}

// checkFlags reports an igpt flag given that the command does not take, and
// sets the command's own defaults of the flags not given.
func (c *command) checkFlags() error {
	own := map[string]flagDoc{}
	for _, f := range slices.Concat(c.flags, globalFlags, beamFlags) {
		own[f.name] = f
	}
	given := map[string]bool{}
	var err error
	flag.Visit(func(f *flag.Flag) {
		given[f.Name] = true
		if _, ok := own[f.Name]; !ok && igptFlags[f.Name] && err == nil {
			err = fmt.Errorf("%s does not take --%s (igpt help %s lists its flags)", c.name, f.Name, c.name)
		}
	})
	if err != nil {
		return err
	}
	for _, f := range c.flags {
		if f.def != "" && !given[f.name] && flag.Lookup(f.name).DefValue != f.def {
			if err := flag.Set(f.name, f.def); err != nil {
				return err
			}
		}
	}
	for _, f := range c.flags {
		if f.key == "" {
			continue
		}
		if err := stages.CheckValue("--"+f.name, f.key, flag.Lookup(f.name).Value.String()); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

// usageLine is "igpt NAME ARGS".
func (c *command) usageLine() string {
	return strings.TrimSpace("igpt " + c.name + " " + c.args)
}

// printUsage writes the global usage: every command and the global flags.
func printUsage(w io.Writer) {
	fmt.Fprint(w, "igpt: image GPT as a workflow of rerunnable stages.\n\nUsage: igpt COMMAND [ARGS] [flags]   (flags go anywhere on the line)\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.usageLine(), c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, "\n`igpt help COMMAND` (or `igpt COMMAND --help`) shows a command's arguments and what each of its flags means.\n\nFlags, and the commands that take them:\n")
	var all []flagDoc
	for _, name := range tableFlags() {
		all = append(all, flagDoc{name: name, usage: strings.Join(flagUsers(name), ", ")})
	}
	printFlags(w, all)
}

// flagUsers names the commands that take the flag.
func flagUsers(name string) []string {
	for _, f := range globalFlags {
		if f.name == name {
			return []string{"every command"}
		}
	}
	var users []string
	for _, c := range commands {
		if slices.ContainsFunc(c.flags, func(f flagDoc) bool { return f.name == name }) {
			users = append(users, c.name)
		}
	}
	return users
}

// printCommandHelp writes one command's usage, what it does, and every flag
// it takes with its default.
func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n", c.usageLine(), wrap(upperFirst(c.summary)+". "+c.detail, 80))
	if len(c.flags) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, c.flags)
	}
	fmt.Fprint(w, "\nFlags of every command:\n")
	printFlags(w, globalFlags)
}

func printFlags(w io.Writer, flags []flagDoc) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range flags {
		fmt.Fprintf(tw, "  --%s=%s\t%s\n", f.name, f.defaultValue(), f.usage)
	}
	tw.Flush()
}

// defaultValue is the flag's default for this command, quoted when empty.
func (f flagDoc) defaultValue() string {
	d := f.def
	if d == "" {
		if fl := flag.Lookup(f.name); fl != nil {
			d = fl.DefValue
		}
	}
	if d == "" {
		return `""`
	}
	return d
}

// wrap breaks s into lines of at most width bytes at spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		if n > 0 && n+1+len(word) > width {
			b.WriteString("\n")
			n = 0
		} else if n > 0 {
			b.WriteString(" ")
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// helpRequested reports whether args ask for help (-h, --help), and for
// which command ("" for the global usage).
func helpRequested(args []string) (string, bool) {
	asked := false
	cmd := ""
	for _, a := range args {
		switch a {
		case "-h", "--h", "-help", "--help":
			asked = true
		default:
			if cmd == "" && !strings.HasPrefix(a, "-") {
				cmd = a
			}
		}
	}
	return cmd, asked
}

func helpCmd(_ context.Context, args []string) error {
	switch len(args) {
	case 0:
		printUsage(os.Stdout)
		return nil
	case 1:
		c, ok := lookup(args[0])
		if !ok {
			return fmt.Errorf("help: unknown command %q (%s)", args[0], strings.Join(commandNames(), ", "))
		}
		printCommandHelp(os.Stdout, c)
		return nil
	}
	return fmt.Errorf("help: want at most one COMMAND, got %q", strings.Join(args, " "))
}

func runCmd(ctx context.Context, args []string) error {
	if f := flag.Lookup("template_location"); f != nil && f.Value.String() != "" {
		return fmt.Errorf("run: --template_location writes one Dataflow job, and a run is a chain of them: use igpt stage NAME CONFIG --template_location=… once per stage (infra/README.md shows how to chain them)")
	}
	return withPlan(ctx, args[0], func(plan *stages.Plan, opt stages.Options) error {
		if *until != "" {
			return plan.RunUntil(ctx, *until, opt)
		}
		return plan.RunAll(ctx, opt)
	})
}

func stageCmd(ctx context.Context, args []string) error {
	return withPlan(ctx, args[1], func(plan *stages.Plan, opt stages.Options) error {
		return plan.RunOne(ctx, args[0], opt)
	})
}

// withPlan plans the config, runs run on the plan and, unless it is a dry
// run, prints the summary of what ran, also after a failure.
func withPlan(ctx context.Context, config string, run func(*stages.Plan, stages.Options) error) error {
	plan, err := loadPlan(ctx, config)
	if err != nil {
		return err
	}
	defer logPeakMemory()
	opt := runOptions()
	err = run(plan, opt)
	if !opt.DryRun {
		plan.Summary(ctx, os.Stdout)
	}
	return err
}

func statusCmd(ctx context.Context, args []string) error {
	plan, err := loadPlan(ctx, args[0])
	if err != nil {
		return err
	}
	plan.Status(ctx, os.Stdout)
	return nil
}

func inspectCmd(ctx context.Context, args []string) error {
	return tools.Inspect(ctx, args[0], *numRecs, os.Stdout)
}

func showCmd(ctx context.Context, args []string) error {
	if args[0] != "tokens" {
		return fmt.Errorf("show: unknown kind %q (tokens)", args[0])
	}
	if *outPath == "" {
		return fmt.Errorf("show: give --out FILE.png")
	}
	png, err := tools.ShowTokens(ctx, args[1], *numRecs, *scale)
	if err != nil {
		return err
	}
	return writeOut(png)
}

// maxPictureFile caps the picture sample --complete reads.
const maxPictureFile = 64 << 20

func sampleCmd(ctx context.Context, args []string) error {
	if *outPath == "" {
		return fmt.Errorf("sample: give --out FILE.png")
	}
	opt := model.SampleOptions{Temperature: *temperature, TopK: *topK, TopP: *topP, Seed: *seed}
	if *complete == "" {
		png, err := stages.SampleGrid(ctx, args[0], *numRecs, opt, *scale)
		if err != nil {
			return err
		}
		return writeOut(png)
	}
	pic, err := storage.ReadUserFile(ctx, *complete, maxPictureFile)
	if err != nil {
		return fmt.Errorf("sample: --complete: %w", err)
	}
	png, err := stages.CompletePicture(ctx, args[0], pic, *numRecs, *keep, opt, *scale)
	if err != nil {
		return err
	}
	return writeOut(png)
}

func writeOut(png []byte) error {
	if err := os.WriteFile(*outPath, png, 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s\n", *outPath)
	return nil
}

func exportHFCmd(ctx context.Context, args []string) error {
	out := *outPath
	if out == "" {
		out = strings.TrimSuffix(args[0], "/") + "/hf"
	}
	if err := tools.ExportHF(ctx, args[0], out); err != nil {
		return err
	}
	fmt.Printf("wrote %s/config.json and %s/model.safetensors (transformers ImageGPTForCausalImageModeling layout)\n", out, out)
	return nil
}

func importHFCmd(ctx context.Context, args []string) error {
	if *outPath == "" {
		return fmt.Errorf("import-hf: give --out FILE.safetensors")
	}
	cfg, err := tools.ImportHF(ctx, args[0], *outPath)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: %v\n", *outPath, cfg)
	return nil
}

func stagesCmd(context.Context, []string) error {
	for _, n := range stages.Names() {
		fmt.Println(n)
	}
	return nil
}

// tableFlags is every flag name the table documents, sorted.
func tableFlags() []string {
	seen := map[string]bool{}
	for _, c := range commands {
		for _, f := range c.flags {
			seen[f.name] = true
		}
	}
	for _, f := range slices.Concat(globalFlags, beamFlags) {
		seen[f.name] = true
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
