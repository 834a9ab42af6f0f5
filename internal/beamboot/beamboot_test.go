package beamboot

import (
	"os"
	"testing"
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
