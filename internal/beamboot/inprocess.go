package beamboot

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/apache/beam/sdks/v2/go/container/tools"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/harness"
	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/jobopts"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/util/grpcx"
	"google.golang.org/grpc"
)

// InProcessPool is an external worker pool whose workers are Beam SDK
// harnesses running in this process, as Beam's loopback mode runs them, but
// one pool for the life of the process instead of one per job.
//
// Why: Beam's universal runner starts a loopback pool for each job and
// closes it when the job returns, while prism asks for each environment's
// worker from a goroutine of its own that can run after that (a job that
// ended or was cancelled before the request was sent); prism panics, and
// the process dies, on the refused connection. A pool that outlives every
// job answers such a late request, and prism stops the worker it started
// at once, since the job's context is already done.
type InProcessPool struct {
	fnpb.UnimplementedBeamFnExternalWorkerPoolServer

	lis net.Listener

	mu      sync.Mutex
	workers map[string]context.CancelFunc
	started int
}

var (
	inProcessOnce sync.Once
	inProcess     *InProcessPool
	inProcessErr  error
)

// InProcess returns the process's in-process worker pool, serving on
// 127.0.0.1 from its first call until the process exits.
func InProcess() (*InProcessPool, error) {
	inProcessOnce.Do(func() {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			inProcessErr = fmt.Errorf("beamboot: in-process worker pool: %w", err)
			return
		}
		p := &InProcessPool{lis: lis, workers: map[string]context.CancelFunc{}}
		srv := grpc.NewServer()
		fnpb.RegisterBeamFnExternalWorkerPoolServer(srv, p)
		go srv.Serve(lis)
		inProcess = p
	})
	return inProcess, inProcessErr
}

// Addr is the pool's address, for --environment_config.
func (p *InProcessPool) Addr() string { return p.lis.Addr().String() }

// Started is the number of harnesses started so far.
func (p *InProcessPool) Started() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// Running is the number of harnesses started and not yet stopped.
func (p *InProcessPool) Running() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.workers)
}

// StartWorker runs one SDK harness in a goroutine of this process.
func (p *InProcessPool) StartWorker(_ context.Context, req *fnpb.StartWorkerRequest) (*fnpb.StartWorkerResponse, error) {
	id := req.GetWorkerId()
	if req.GetControlEndpoint() == nil || req.GetLoggingEndpoint() == nil {
		return &fnpb.StartWorkerResponse{Error: fmt.Sprintf("worker %q: no control or logging endpoint", id)}, nil
	}
	// The harness lives until StopWorker, not as long as this request.
	ctx, cancel := context.WithCancel(grpcx.WriteWorkerID(context.Background(), id))
	// Asked of the runner before the lock: a slow answer holds up no
	// other worker's start or stop.
	var opts harness.Options
	if ep := req.GetProvisionEndpoint().GetUrl(); ep != "" {
		if info, err := tools.ProvisionInfo(ctx, ep); err == nil {
			opts.StatusEndpoint = info.GetStatusEndpoint().GetUrl()
			opts.RunnerCapabilities = info.GetRunnerCapabilities()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.workers[id]; ok {
		cancel()
		return &fnpb.StartWorkerResponse{Error: fmt.Sprintf("worker %q already exists", id)}, nil
	}
	p.workers[id] = cancel
	p.started++
	go func() {
		if err := harness.MainWithOptions(ctx, req.GetLoggingEndpoint().GetUrl(), req.GetControlEndpoint().GetUrl(), opts); err != nil && ctx.Err() == nil {
			slog.Debug("beamboot: in-process worker ended", "id", id, "err", err)
		}
	}()
	return &fnpb.StartWorkerResponse{}, nil
}

// StopWorker ends one harness; an unknown id (already stopped) is no error.
func (p *InProcessPool) StopWorker(_ context.Context, req *fnpb.StopWorkerRequest) (*fnpb.StopWorkerResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cancel, ok := p.workers[req.GetWorkerId()]; ok {
		cancel()
		delete(p.workers, req.GetWorkerId())
	}
	return &fnpb.StopWorkerResponse{}, nil
}

// An empty file is named as the job's worker binary when no worker runs
// the binary the job carries: the in-process pool's, which run here, and
// Pool's, which start their own Program. Beam's runner stages the file it
// is given, and with no name it would stage this whole executable (or
// compile one), which prism holds in memory for each job.
var (
	emptyBinOnce sync.Once
	emptyBin     string
	emptyBinErr  error
)

// EmptyWorkerBinary returns the path of an empty temp file, made once per
// process, for --worker_binary with InProcess or a Pool.
func EmptyWorkerBinary() (string, error) {
	emptyBinOnce.Do(func() {
		f, err := os.CreateTemp("", "igpt-inprocess-worker-*")
		if err != nil {
			emptyBinErr = fmt.Errorf("beamboot: worker binary placeholder: %w", err)
			return
		}
		emptyBin = f.Name()
		emptyBinErr = f.Close()
	})
	return emptyBin, emptyBinErr
}

// RemoveEmptyWorkerBinary removes the placeholder EmptyWorkerBinary made,
// if any; call it as the process ends.
func RemoveEmptyWorkerBinary() {
	if emptyBin != "" {
		os.Remove(emptyBin)
	}
}

// UseWorkers points Beam's runner at the external worker pool at addr
// (--environment_type EXTERNAL, --environment_config addr) with the empty
// worker binary, since the pool runs its own program; restore puts the
// three flags back as they were.
func UseWorkers(addr string) (restore func(), err error) {
	bin, err := EmptyWorkerBinary()
	if err != nil {
		return nil, err
	}
	flags := []*string{jobopts.EnvironmentType, jobopts.EnvironmentConfig, jobopts.WorkerBinary}
	was := make([]string, len(flags))
	for i, f := range flags {
		was[i] = *f
	}
	*jobopts.EnvironmentType, *jobopts.EnvironmentConfig, *jobopts.WorkerBinary = "EXTERNAL", addr, bin
	return func() {
		for i, f := range flags {
			*f = was[i]
		}
	}, nil
}
