package kernels

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestEnvVar checks that IGPT_KERNELS forces the path in a fresh process.
func TestEnvVar(t *testing.T) {
	if os.Getenv("IGPT_KERNELS_CHILD") != "" {
		os.Stdout.WriteString("path=" + Path() + "\n")
		return
	}
	for _, want := range Paths() {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnvVar$", "-test.v")
		cmd.Env = append(os.Environ(), "IGPT_KERNELS_CHILD=1", EnvVar+"="+want)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", want, err, out)
		}
		if !strings.Contains(string(out), "path="+want+"\n") {
			t.Fatalf("%s=%s: child reports %q", EnvVar, want, out)
		}
	}
}
