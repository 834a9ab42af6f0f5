package stages

import (
	"context"
	"flag"
	"testing"
	"time"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/igpt/igpt/internal/beamboot"
)

// TestPrismUsesTheInProcessPool: a prism job runs its workers from the
// process's in-process pool (not a loopback pool that closes with the job),
// stops them when it ends, leaves the flags as they were, and a worker
// request that arrives after the job (as prism's per-environment goroutine
// can send one) is answered instead of refused.
func TestPrismUsesTheInProcessPool(t *testing.T) {
	pool, err := beamboot.InProcess()
	if err != nil {
		t.Fatal(err)
	}
	before := pool.Started()
	flags := []string{"environment_type", "environment_config", "worker_binary"}
	was := map[string]string{}
	for _, name := range flags {
		was[name] = flag.Lookup(name).Value.String()
	}
	root := t.TempDir()
	if _, err := runUntil(t, trainYAML(root, folderArchive(t, 4, nil), 20, 32, 2, 0.01), "download", Options{}); err != nil {
		t.Fatal(err)
	}
	if pool.Started() == before {
		t.Fatalf("the download job started no worker from the in-process pool (%d before and after)", before)
	}
	for _, name := range flags {
		if v := flag.Lookup(name).Value.String(); v != was[name] {
			t.Errorf("--%s is %q after the job, was %q", name, v, was[name])
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for pool.Running() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := pool.Running(); n > 0 {
		t.Errorf("%d in-process workers still running after the job ended", n)
	}

	// A late request, sent the way prism sends it.
	conn, err := grpc.NewClient(pool.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := fnpb.NewBeamFnExternalWorkerPoolClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ep := &pipepb.ApiServiceDescriptor{Url: "127.0.0.1:1"} // the ended job's endpoint: nothing answers there
	resp, err := client.StartWorker(ctx, &fnpb.StartWorkerRequest{WorkerId: "late", ControlEndpoint: ep, LoggingEndpoint: ep})
	if err != nil || resp.GetError() != "" {
		t.Fatalf("late StartWorker: %v %q; prism panics on either", err, resp.GetError())
	}
	if _, err := client.StopWorker(ctx, &fnpb.StopWorkerRequest{WorkerId: "late"}); err != nil {
		t.Fatal(err)
	}
	if n := pool.Running(); n > 0 {
		t.Errorf("%d workers running after the late one was stopped", n)
	}
}
