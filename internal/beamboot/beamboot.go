// Package beamboot starts igpt's Beam workers the way Beam's own container
// boot program does on Dataflow: a worker process is started with the
// runner's provision endpoint, fetches its pipeline options from it and
// runs the SDK harness. It also holds an external worker pool (Beam's
// BeamFnExternalWorkerPool service) that starts each worker as a separate
// OS process, so local runs and tests exercise the same path as Dataflow:
// nothing is shared with the launcher but what goes through the runner.
package beamboot

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apache/beam/sdks/v2/go/container/tools"
	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/util/grpcx"
	"google.golang.org/grpc"
)

// bootFlags are the flags a worker pool passes to the program it starts.
var bootFlags = []string{"id", "control_endpoint", "artifact_endpoint", "provision_endpoint", "logging_endpoint"}

// MaybeBoot turns this process into a Beam worker when it was started by a
// worker pool (its arguments hold --provision_endpoint): it fetches the
// pipeline options from the provision service, writes them where the
// harness reads them, and executes itself again in worker mode (--worker,
// as the Dataflow boot program does). Otherwise it returns at once. Call it
// first in main and in a test binary's TestMain.
func MaybeBoot() {
	args := parseBootArgs(os.Args[1:])
	if args["provision_endpoint"] == "" {
		return
	}
	if err := boot(args); err != nil {
		fmt.Fprintf(os.Stderr, "igpt worker boot: %v\n", err)
		os.Exit(1)
	}
}

func parseBootArgs(argv []string) map[string]string {
	out := map[string]string{}
	for _, a := range argv {
		a = strings.TrimLeft(a, "-")
		k, v, ok := strings.Cut(a, "=")
		if ok {
			for _, f := range bootFlags {
				if k == f {
					out[k] = v
				}
			}
		}
	}
	return out
}

func boot(args map[string]string) error {
	ctx := grpcx.WriteWorkerID(context.Background(), args["id"])
	info, err := tools.ProvisionInfo(ctx, args["provision_endpoint"])
	if err != nil {
		return fmt.Errorf("provision info from %s: %w", args["provision_endpoint"], err)
	}
	options, err := tools.ProtoToJSON(info.GetPipelineOptions())
	if err != nil {
		return fmt.Errorf("pipeline options: %w", err)
	}
	// The harness reads the options from PIPELINE_OPTIONS_FILE; a temp
	// file, not the working folder Beam's helper would write it to.
	f, err := os.CreateTemp("", "igpt-pipeline-options-*.json")
	if err != nil {
		return fmt.Errorf("pipeline options file: %w", err)
	}
	if _, err := f.WriteString(options); err != nil {
		f.Close()
		return fmt.Errorf("pipeline options file: %w", err)
	}
	f.Close()
	os.Setenv("PIPELINE_OPTIONS_FILE", f.Name())
	// IGPT_WORKER_GODEBUG is GODEBUG for workers alone (e.g. gctrace=1 to
	// read a worker's live heap apart from its launcher's, as
	// bench/memory.sh does).
	if v := os.Getenv("IGPT_WORKER_GODEBUG"); v != "" {
		os.Setenv("GODEBUG", v)
	}
	logging, control := args["logging_endpoint"], args["control_endpoint"]
	if u := info.GetLoggingEndpoint().GetUrl(); u != "" {
		logging = u
	}
	if u := info.GetControlEndpoint().GetUrl(); u != "" {
		control = u
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	argv := []string{exe, "--worker=true", "--id=" + args["id"], "--logging_endpoint=" + logging, "--control_endpoint=" + control}
	return syscall.Exec(exe, argv, os.Environ())
}

// Pool is an external worker pool on the loopback interface: the runner
// asks it to start workers, and it starts each as a process of Program.
type Pool struct {
	fnpb.UnimplementedBeamFnExternalWorkerPoolServer

	Program string // the executable started for each worker (it must call MaybeBoot)

	lis net.Listener
	srv *grpc.Server

	mu      sync.Mutex
	workers map[string]*exec.Cmd
	started int
	peakKiB int64 // largest VmHWM seen of any worker
}

// StartPool serves a worker pool on 127.0.0.1 at a free port.
func StartPool(program string) (*Pool, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("beamboot: worker pool: %w", err)
	}
	p := &Pool{Program: program, lis: lis, srv: grpc.NewServer(), workers: map[string]*exec.Cmd{}}
	fnpb.RegisterBeamFnExternalWorkerPoolServer(p.srv, p)
	go p.srv.Serve(lis)
	return p, nil
}

// Addr is the pool's address, for --environment_config.
func (p *Pool) Addr() string { return p.lis.Addr().String() }

// Started is the number of worker processes started so far.
func (p *Pool) Started() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// StartWorker starts one worker process.
func (p *Pool) StartWorker(_ context.Context, req *fnpb.StartWorkerRequest) (*fnpb.StartWorkerResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.workers == nil {
		// Prism starts a worker for every environment of a pipeline in a
		// goroutine of its own, and a job can end before that goroutine
		// asks (an environment no stage used, or a loaded machine); it
		// panics, killing the launcher, on any failed or refused request.
		// The job is over, so nothing is started: prism then sees the job's
		// context done and asks to stop the worker.
		slog.Debug("beamboot: worker asked of a stopped pool; none started", "id", req.GetWorkerId())
		return &fnpb.StartWorkerResponse{}, nil
	}
	if _, ok := p.workers[req.GetWorkerId()]; ok {
		return &fnpb.StartWorkerResponse{Error: fmt.Sprintf("worker %q already exists", req.GetWorkerId())}, nil
	}
	cmd := exec.Command(p.Program,
		"--id="+req.GetWorkerId(),
		"--control_endpoint="+req.GetControlEndpoint().GetUrl(),
		"--artifact_endpoint="+req.GetArtifactEndpoint().GetUrl(),
		"--provision_endpoint="+req.GetProvisionEndpoint().GetUrl(),
		"--logging_endpoint="+req.GetLoggingEndpoint().GetUrl())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return &fnpb.StartWorkerResponse{Error: fmt.Sprintf("start worker %v: %v", req.GetWorkerId(), err)}, nil
	}
	slog.Debug("beamboot: started worker", "id", req.GetWorkerId(), "pid", cmd.Process.Pid)
	p.workers[req.GetWorkerId()] = cmd
	p.started++
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	go p.watch(cmd.Process.Pid, done)
	return &fnpb.StartWorkerResponse{}, nil
}

// watch samples a worker's peak resident memory (VmHWM) until it exits.
func (p *Pool) watch(pid int, done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if kib := PeakRSSKiB(pid); kib > 0 {
			p.mu.Lock()
			p.peakKiB = max(p.peakKiB, kib)
			p.mu.Unlock()
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// PeakWorkerRSSKiB is the largest peak resident memory seen of any worker.
func (p *Pool) PeakWorkerRSSKiB() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peakKiB
}

// PeakRSSKiB reads a process's peak resident memory (VmHWM, KiB) from
// /proc; 0 when it cannot. (getrusage's maxrss is no use for workers: a
// child started by fork and exec keeps its parent's high-water mark.)
func PeakRSSKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// StopWorker ends one worker process.
func (p *Pool) StopWorker(_ context.Context, req *fnpb.StopWorkerRequest) (*fnpb.StopWorkerResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cmd, ok := p.workers[req.GetWorkerId()]; ok {
		cmd.Process.Kill()
		delete(p.workers, req.GetWorkerId())
	}
	return &fnpb.StopWorkerResponse{}, nil
}

// Stop ends every worker. The service keeps answering until the process
// exits (see StartWorker): closing it would reset the connection of a
// request prism may still send for a job that has ended, and prism panics
// on that.
func (p *Pool) Stop() {
	p.mu.Lock()
	for _, cmd := range p.workers {
		cmd.Process.Kill()
	}
	p.workers = nil
	p.mu.Unlock()
}
