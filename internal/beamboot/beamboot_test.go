package beamboot

import (
	"context"
	"os"
	"testing"
	"time"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestParseBootArgs(t *testing.T) {
	got := parseBootArgs([]string{"--id=w1", "--control_endpoint=localhost:1", "-provision_endpoint=localhost:2", "--other=x", "positional"})
	want := map[string]string{"id": "w1", "control_endpoint": "localhost:1", "provision_endpoint": "localhost:2"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if parseBootArgs([]string{"run", "cfg.yaml"})["provision_endpoint"] != "" {
		t.Error("an ordinary command line reads as a worker boot")
	}
}

func TestPeakRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc here")
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = 1
	}
	if kib := PeakRSSKiB(os.Getpid()); kib < 64<<10 {
		t.Errorf("peak RSS %d KiB after touching 64 MiB", kib)
	}
	if PeakRSSKiB(-1) != 0 {
		t.Error("a missing process has a peak RSS")
	}
	_ = buf[len(buf)-1]
}

// TestStoppedPoolAnswers: prism may ask a pool for a worker after the job
// that needed it has ended (it starts one per environment in a goroutine
// of its own) and panics, killing the launcher, if the request fails or is
// refused. A stopped pool must still answer, without starting a process.
func TestStoppedPoolAnswers(t *testing.T) {
	p, err := StartPool("/nonexistent/igpt-worker")
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	conn, err := grpc.NewClient(p.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := fnpb.NewBeamFnExternalWorkerPoolClient(conn).StartWorker(ctx, &fnpb.StartWorkerRequest{WorkerId: "late"})
	if err != nil || resp.GetError() != "" {
		t.Fatalf("a stopped pool answered err %v, error %q: prism would panic", err, resp.GetError())
	}
	if n := p.Started(); n != 0 {
		t.Fatalf("a stopped pool started %d workers", n)
	}
}
