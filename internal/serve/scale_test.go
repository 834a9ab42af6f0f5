package serve

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/igpt/igpt/internal/testutil"
	"github.com/igpt/igpt/stages"
)

// manyOutputs writes n stage outputs (manifests and the reports their
// headlines read) under root, copied from the fixture's with new keys.
func manyOutputs(t *testing.T, n int) map[string][]byte {
	src := tinyRoot(t)
	var seeds []string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == stages.ManifestName {
			seeds = append(seeds, filepath.Dir(p))
		}
		return nil
	})
	files := map[string][]byte{}
	for i := 0; i < n; i++ {
		dir := seeds[i%len(seeds)]
		rel, _ := filepath.Rel(src, dir)
		stage := filepath.Dir(rel)
		sum := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		key := hex.EncodeToString(sum[:])[:12]
		for _, name := range []string{stages.ManifestName, stages.ReportJSON, stages.BaselinesFile} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				continue
			}
			if name == stages.ManifestName {
				var m map[string]any
				json.Unmarshal(b, &m)
				m["key"] = key
				b, _ = json.Marshal(m)
			}
			files[stage+"/"+key+"/"+name] = b
		}
	}
	return files
}

// TestOverview200 times the overview of 200 stage outputs, local and on
// the fake GCS server; the bound is loose (a shared CI machine), the
// figure is logged (go test -run TestOverview200 -v).
func TestOverview200(t *testing.T) {
	files := manyOutputs(t, 200)
	local := t.TempDir()
	for name, b := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(local, name)), 0o755)
		os.WriteFile(filepath.Join(local, name), b, 0o644)
	}
	srv := testutil.FakeGCS(t, "runs")
	for name, b := range files {
		srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "runs", Name: "root/" + name}, Content: b})
	}
	for _, root := range []string{local, "gs://runs/root"} {
		_, ts := newTestServer(t, Options{Root: root})
		var times []time.Duration
		for i := 0; i < 3; i++ {
			start := time.Now()
			code, body := get(t, ts.URL+"/")
			times = append(times, time.Since(start))
			if code != 200 || strings.Count(body, "<tr data-ref=") != 200 {
				t.Fatalf("%s: %d, %d rows", root, code, strings.Count(body, "<tr data-ref="))
			}
		}
		t.Logf("overview of 200 stage outputs under %s: first %v, then %v, %v", root, times[0], times[1], times[2])
		if times[0] > 10*time.Second {
			t.Errorf("%s: overview took %v", root, times[0])
		}
	}
	// A file of a gs:// root is served as from a local one.
	_, ts := newTestServer(t, Options{Root: "gs://runs/root"})
	for name := range files {
		if strings.HasSuffix(name, stages.ReportJSON) {
			parts := strings.Split(name, "/")
			if code, body := get(t, ts.URL+"/file/"+parts[0]+"/"+parts[1]+"/"+stages.ReportJSON); code != 200 || !json.Valid([]byte(body)) {
				t.Errorf("gs:// %s: %d", name, code)
			}
			break
		}
	}
}
