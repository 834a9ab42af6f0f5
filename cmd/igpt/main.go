// Command igpt prepares image datasets, trains pixel transformers and
// probes their representations, as a workflow of rerunnable stages.
//
//	igpt run CONFIG              plan the config's stages, skip finished ones, run the rest
//	igpt stage NAME CONFIG       run one stage (its upstream outputs must exist)
//	igpt status CONFIG           each stage: done or not, key, records, bytes
//	igpt inspect PATH            a shard's header, record count and first records
//	igpt stages                  list the stages
//
// Beam's flags (--runner, --project, --region, --staging_location,
// --worker_binary, …) may appear anywhere on the command line.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"
	"github.com/igpt/igpt/internal/beamboot"
	"github.com/igpt/igpt/model"
	"github.com/igpt/igpt/stages"
	"github.com/igpt/igpt/tools"
)

var (
	force       = flag.Bool("force", false, "rerun stages even when their outputs exist")
	until       = flag.String("until", "", "run: stop after this stage (and the stages it needs)")
	numRecs     = flag.Int("n", 3, "inspect: records to print; show: images to draw")
	outPath     = flag.String("out", "", "show: PNG file to write; export-hf: folder; import-hf: checkpoint file")
	scale       = flag.Int("scale", 2, "show: pixel magnification")
	complete    = flag.String("complete", "", "sample: a PNG or JPEG picture whose bottom part the model completes")
	keep        = flag.Float64("keep", 0.5, "sample: fraction of the picture's rows kept")
	temperature = flag.Float64("temperature", 1, "sample: softmax temperature")
	topK        = flag.Int("top_k", 0, "sample: keep the k most likely tokens (0: all)")
	topP        = flag.Float64("top_p", 0, "sample: nucleus mass (0: off)")
	seed        = flag.Uint64("seed", 0, "sample: random seed")
	root        = flag.String("root", "", "override the config's root (local folder or gs://bucket/prefix)")
	source      = flag.String("source", "", "override dataset.source: a local file or folder, file://, gs:// or https:// mirror")
	logLevel    = flag.String("log_level", "info", "debug, info, warn or error")
	workerProcs = flag.Bool("worker_processes", false, "prism/direct: run Beam workers as separate processes through an external worker pool, as Dataflow does (prism itself stays in the launcher)")
)

const usage = `igpt: image GPT as a workflow of rerunnable stages.

Usage:
  igpt run CONFIG [--until STAGE]  run every stage not yet done (or only those STAGE needs)
  igpt stage NAME CONFIG [flags]   run one stage; its upstream stages must be done
  igpt status CONFIG               show each stage's key, state and record counts
  igpt inspect PATH [--n N]        show a shard (local or gs://) or a stage folder
  igpt show tokens PATH --out F.png [--n 64]
                                   originals beside their palette-decoded tokens
  igpt stages                      list the stages

Flags (anywhere on the line; Beam's flags such as --runner=direct|dataflow,
--project, --region, --staging_location and --worker_binary are accepted too):
`

func main() {
	flag.Usage = func() {
		fmt.Fprint(os.Stderr, usage)
		for _, name := range []string{"force", "until", "dry_run", "n", "out", "scale", "complete", "keep", "temperature", "top_k", "top_p", "seed", "root", "source", "log_level", "runner", "worker_processes"} {
			if f := flag.Lookup(name); f != nil {
				fmt.Fprintf(os.Stderr, "  --%s\t%s\n", f.Name, f.Usage)
			}
		}
	}
	beamboot.MaybeBoot() // started by a worker pool: become a Beam worker
	args := parseInterspersed(os.Args[1:])
	beam.Init() // on a worker this runs the harness and never returns
	setLogLevel(*logLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var pool *beamboot.Pool
	if *workerProcs {
		var err error
		if pool, err = startWorkerPool(); err != nil {
			fmt.Fprintf(os.Stderr, "igpt: --worker_processes: %v\n", err)
			os.Exit(1)
		}
		defer pool.Stop()
	}
	err := dispatch(ctx, args)
	if len(args) > 0 && (args[0] == "run" || args[0] == "stage") {
		logPeakMemory(pool)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "igpt: %v\n", err)
		os.Exit(1)
	}
}

// parseInterspersed parses flags wherever they appear and returns the
// positional arguments, so "igpt run cfg.yaml --force" works.
func parseInterspersed(args []string) []string {
	var pos []string
	for {
		if err := flag.CommandLine.Parse(args); err != nil {
			os.Exit(2)
		}
		rest := flag.CommandLine.Args()
		if len(rest) == 0 {
			return pos
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// startWorkerPool serves an external worker pool that starts this program
// as each Beam worker, and points the runner at it.
func startWorkerPool() (*beamboot.Pool, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pool, err := beamboot.StartPool(exe)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"environment_type": "EXTERNAL", "environment_config": pool.Addr(), "worker_binary": exe} {
		if err := flag.Set(k, v); err != nil {
			pool.Stop()
			return nil, err
		}
	}
	return pool, nil
}

// logPeakMemory logs this process's peak resident memory and, with
// --worker_processes, that of the largest worker, for sizing machines.
func logPeakMemory(pool *beamboot.Pool) {
	var worker int64
	if pool != nil {
		worker = pool.PeakWorkerRSSKiB()
	}
	slog.Info("peak memory", "launcher_rss_mib", beamboot.PeakRSSKiB(os.Getpid())>>10, "largest_worker_rss_mib", worker>>10)
}

func setLogLevel(s string) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		fmt.Fprintf(os.Stderr, "igpt: --log_level: %v\n", err)
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})))
}

func dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		flag.Usage()
		return fmt.Errorf("no command given")
	}
	cmd, args := args[0], args[1:]
	need := func(n int, what string) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %s, got %q", cmd, what, strings.Join(args, " "))
		}
		return nil
	}
	switch cmd {
	case "run":
		if err := need(1, "CONFIG"); err != nil {
			return err
		}
		plan, err := loadPlan(ctx, args[0])
		if err != nil {
			return err
		}
		if *until != "" {
			return plan.RunUntil(ctx, *until, runOptions())
		}
		return plan.RunAll(ctx, runOptions())
	case "stage":
		if err := need(2, "NAME CONFIG"); err != nil {
			return err
		}
		plan, err := loadPlan(ctx, args[1])
		if err != nil {
			return err
		}
		return plan.RunOne(ctx, args[0], runOptions())
	case "status":
		if err := need(1, "CONFIG"); err != nil {
			return err
		}
		plan, err := loadPlan(ctx, args[0])
		if err != nil {
			return err
		}
		plan.Status(os.Stdout)
		return nil
	case "inspect":
		if err := need(1, "PATH"); err != nil {
			return err
		}
		return tools.Inspect(ctx, args[0], *numRecs, os.Stdout)
	case "show":
		if err := need(2, "tokens PATH"); err != nil {
			return err
		}
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
		return os.WriteFile(*outPath, png, 0o644)
	case "sample":
		if err := need(1, "RUN (a train stage folder)"); err != nil {
			return err
		}
		if *outPath == "" {
			return fmt.Errorf("sample: give --out FILE.png")
		}
		opt := model.SampleOptions{Temperature: *temperature, TopK: *topK, TopP: *topP, Seed: *seed}
		var png []byte
		var err error
		if *complete != "" {
			pic, rerr := os.ReadFile(*complete)
			if rerr != nil {
				return rerr
			}
			png, err = stages.CompletePicture(ctx, args[0], pic, *numRecs, *keep, opt, *scale)
		} else {
			png, err = stages.SampleGrid(ctx, args[0], *numRecs, opt, *scale)
		}
		if err != nil {
			return err
		}
		return os.WriteFile(*outPath, png, 0o644)
	case "export-hf":
		if err := need(1, "RUN (a train stage folder)"); err != nil {
			return err
		}
		out := *outPath
		if out == "" {
			out = strings.TrimSuffix(args[0], "/") + "/hf"
		}
		if err := tools.ExportHF(ctx, args[0], out); err != nil {
			return err
		}
		fmt.Printf("wrote %s/config.json and %s/model.safetensors (transformers ImageGPTForCausalImageModeling layout)\n", out, out)
		return nil
	case "import-hf":
		if err := need(1, "DIR (config.json + model.safetensors)"); err != nil {
			return err
		}
		if *outPath == "" {
			return fmt.Errorf("import-hf: give --out FILE.safetensors")
		}
		cfg, err := tools.ImportHF(ctx, args[0], *outPath)
		if err != nil {
			return err
		}
		fmt.Printf("wrote %s: %v\n", *outPath, cfg)
		return nil
	case "stages":
		for _, n := range stages.Names() {
			fmt.Println(n)
		}
		return nil
	case "help":
		flag.Usage()
		return nil
	}
	return fmt.Errorf("unknown command %q (run, stage, status, inspect, show, export-hf, import-hf, stages)", cmd)
}

func loadPlan(ctx context.Context, path string) (*stages.Plan, error) {
	cfg, err := stages.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	if *root != "" {
		cfg.Root = *root
	}
	if *source != "" {
		cfg.Dataset.Source = *source
	}
	return stages.NewPlan(ctx, cfg)
}

func runOptions() stages.Options {
	dry := flag.Lookup("dry_run").Value.String() == "true"
	return stages.Options{Force: *force, DryRun: dry, Runner: *runners.Runner, Out: os.Stdout}
}
