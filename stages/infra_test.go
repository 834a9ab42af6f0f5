package stages

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	infraOnce sync.Once
	infraErr  error
	infraOut  []byte
)

// repoRoot is the repository's root folder.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// buildInfra runs infra/build.sh once per test binary and returns the
// folder its binaries are in.
func buildInfra(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the flex template's binaries")
	}
	infraOnce.Do(func() {
		cmd := exec.Command("bash", filepath.Join(repoRoot(), "infra", "build.sh"))
		infraOut, infraErr = cmd.CombinedOutput()
	})
	if infraErr != nil {
		t.Fatalf("infra/build.sh: %v\n%s", infraErr, infraOut)
	}
	return filepath.Join(repoRoot(), "infra", "bin")
}

// TestFlexTemplate parses infra/Dockerfile and infra/metadata.json: every
// file the Dockerfile copies exists after infra/build.sh, the worker binary
// it ships is one Dataflow can run, the launcher it names is copied in, and
// every template parameter is one the launch script passes on.
func TestFlexTemplate(t *testing.T) {
	bin := buildInfra(t)
	root := repoRoot()
	f, err := os.Open(filepath.Join(root, "infra", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	copied := map[string]string{} // destination → source
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "COPY":
			if len(fields) != 3 {
				t.Fatalf("Dockerfile: %q: want COPY SRC DST", sc.Text())
			}
			if _, err := os.Stat(filepath.Join(root, fields[1])); err != nil {
				t.Errorf("Dockerfile copies %s, which does not exist after infra/build.sh: %v", fields[1], err)
			}
			copied[fields[2]] = fields[1]
		case "ENV":
			k, v, _ := strings.Cut(fields[1], "=")
			env[k] = v
		}
	}
	for _, k := range []string{"FLEX_TEMPLATE_GO_BINARY", "IGPT_WORKER_BINARY"} {
		if _, ok := copied[env[k]]; !ok {
			t.Errorf("Dockerfile: ENV %s=%q is not a file the image copies in", k, env[k])
		}
	}
	if err := CheckWorkerBinary(filepath.Join(bin, "igpt-worker")); err != nil {
		t.Errorf("the worker binary the image ships: %v", err)
	}
	if err := CheckWorkerBinary("/bin/sh"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("a dynamically linked worker binary is accepted: %v", err)
	}

	var meta struct {
		Name       string
		Parameters []struct {
			Name       string
			IsOptional bool
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "infra", "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &meta); err != nil || meta.Name == "" || len(meta.Parameters) == 0 {
		t.Fatalf("metadata.json: %v (name %q, %d parameters)", err, meta.Name, len(meta.Parameters))
	}
	launch, _ := os.ReadFile(filepath.Join(root, "infra", "launch.sh"))
	out, _ := exec.Command(filepath.Join(bin, "igpt"), "help", "run").CombinedOutput() // the flags a Flex Template launch passes to run
	for _, p := range meta.Parameters {
		if !strings.Contains(string(launch), "--"+p.Name+"=") && !strings.Contains(string(out), "--"+p.Name) {
			t.Errorf("metadata.json parameter %s is neither handled by launch.sh nor a flag of igpt", p.Name)
		}
	}
}
