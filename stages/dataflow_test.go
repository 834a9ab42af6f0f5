package stages

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"

	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/igpt/igpt/internal/testutil"
)

// captureLog records Beam's log messages.
type captureLog struct {
	mu   sync.Mutex
	msgs []string
}

func (c *captureLog) Log(_ context.Context, _ beamlog.Severity, _ int, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, msg)
}

func setFlags(t *testing.T, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		f := flag.Lookup(k)
		if f == nil {
			t.Fatalf("flag --%s is not defined", k)
		}
		old := f.Value.String()
		if err := flag.Set(k, v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { flag.Set(k, old) })
	}
}

// TestDataflowDryRun builds the download stage's Dataflow job against the
// GCS emulator with --dry_run: the job is printed, never submitted, no
// manifest is written, and the job names the pipeline's transforms.
func TestDataflowDryRun(t *testing.T) {
	testutil.FakeGCS(t, "bkt")
	setFlags(t, map[string]string{
		"dry_run": "true", "project": "igpt-test", "region": "us-central1",
		"staging_location": "gs://bkt/staging",
	})
	logs := &captureLog{}
	beamlog.SetLogger(logs)
	t.Cleanup(func() { beamlog.SetLogger(&beamlog.Standard{}) })

	yaml := fmt.Sprintf("root: gs://bkt/igpt\ndataset: {name: folder, source: %s}\n", folderArchive(t, 8, nil))
	st, err := runDownload(t, yaml, Options{DryRun: true, Runner: "dataflow"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Done() {
		t.Fatal("a dry run wrote a manifest")
	}
	all := strings.Join(logs.msgs, "\n")
	if !strings.Contains(all, "Dry-run: not submitting job") {
		t.Fatalf("no dry-run job printed; Beam logged:\n%.2000s", all)
	}
	for _, transform := range []string{"download/ListUnits", "download/ReadUnits", "download/Collect", "download/WriteStats"} {
		if !strings.Contains(all, transform) {
			t.Errorf("the Dataflow job does not name transform %s", transform)
		}
	}
	if !strings.Contains(all, "igpt-test") {
		t.Error("the job does not carry the project")
	}
}
