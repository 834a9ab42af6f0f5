package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"
	"github.com/igpt/igpt/internal/beamboot"
	"github.com/igpt/igpt/stages"
)

// igpt's own flags; each command's help (the table in commands.go) says
// what they mean there.
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

// igptFlags are the flags igpt defines; Beam's are accepted anywhere.
var igptFlags = map[string]bool{}

func init() {
	for _, f := range []string{"force", "until", "n", "out", "scale", "complete", "keep", "temperature", "top_k", "top_p",
		"seed", "root", "source", "log_level", "worker_processes"} {
		igptFlags[f] = true
	}
}

func main() {
	// A bad flag value: the flag package has printed the error; point at
	// the command's help rather than push the error off screen.
	flag.Usage = func() { flagErrorHint(os.Stderr, os.Args[1:]) }
	beamboot.MaybeBoot() // started by a worker pool: become a Beam worker
	if name, ok := helpRequested(os.Args[1:]); ok {
		var err error
		if name != "" {
			err = helpCmd(context.Background(), []string{name})
		} else {
			printUsage(os.Stdout)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "igpt: %v\n", err)
			os.Exit(2)
		}
		return
	}
	args := parseInterspersed(os.Args[1:])
	if *logLevel != "debug" {
		beamlog.LogLevel = "warn" // the level of the logger Beam installs again for in-process workers
	}
	beamboot.TuneWorkerGC() // a worker (from a pool or Dataflow's boot) collects at 1.5× its live heap
	beam.Init()             // on a worker this runs the harness and never returns
	setLogLevel(*logLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *workerProcs {
		var err error
		if workerPool, err = startWorkerPool(); err != nil {
			fmt.Fprintf(os.Stderr, "igpt: --worker_processes: %v\n", err)
			os.Exit(1)
		}
		defer workerPool.Stop()
	}
	err := dispatch(ctx, args)
	beamboot.RemoveEmptyWorkerBinary()
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
	// The pool starts this program itself; the job stages an empty worker
	// binary (with this executable, each job staged its ~130 MiB into
	// prism, in this process).
	if _, err := beamboot.UseWorkers(pool.Addr()); err != nil {
		pool.Stop()
		return nil, err
	}
	return pool, nil
}

// workerPool is the external worker pool of --worker_processes, nil without.
var workerPool *beamboot.Pool

// flagErrorHint follows the flag package's own line about a bad flag (or
// value) with where that command's flags are described.
func flagErrorHint(w io.Writer, args []string) {
	for _, a := range args {
		if _, ok := lookup(a); ok && !strings.HasPrefix(a, "-") {
			fmt.Fprintf(w, "see: igpt help %s\n", a)
			return
		}
	}
	fmt.Fprintln(w, "see: igpt help")
}

// logPeakMemory logs this process's peak resident memory and, with
// --worker_processes, that of the largest worker, for sizing machines. Run
// and stage log it once a plan was loaded (not after a config error).
func logPeakMemory() {
	var worker int64
	if pool := workerPool; pool != nil {
		worker = pool.PeakWorkerRSSKiB()
	}
	slog.Info("peak memory", "launcher_rss_mib", beamboot.PeakRSSKiB(os.Getpid())>>10, "largest_worker_rss_mib", worker>>10)
}

func runOptions() stages.Options {
	dry := flag.Lookup("dry_run").Value.String() == "true"
	// Suggested commands repeat the flags that change what a plan is.
	var rerun []string
	for _, f := range []string{"root", "source"} {
		if v := flag.Lookup(f).Value.String(); v != "" {
			rerun = append(rerun, "--"+f+"="+v)
		}
	}
	async := flag.Lookup("async").Value.String() == "true"
	return stages.Options{Force: *force, DryRun: dry, Async: async, Runner: *runners.Runner, Out: os.Stdout, Rerun: strings.Join(rerun, " ")}
}
