package main

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igpt/igpt/internal/beamboot"
)

// tempConfig writes a config under a temp dir and returns its path.
func tempConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunnerFlagCheckedAtLoad: --runner=prsm is refused before anything is
// planned or read, by run and stage, dry runs included (a dry run used to
// print a normal plan).
func TestRunnerFlagCheckedAtLoad(t *testing.T) {
	cfg := tempConfig(t, "root: "+t.TempDir()+"\ndataset: {name: mnist}\n")
	t.Cleanup(func() { freshFlags(t, "runner", "", "dry_run", "false") })
	for _, args := range [][]string{{"run", cfg}, {"stage", "download", cfg}} {
		for _, dry := range []string{"false", "true"} {
			freshFlags(t, "runner", "prsm", "dry_run", dry)
			err := dispatch(context.Background(), args)
			if err == nil || !strings.Contains(err.Error(), `--runner: runner "prsm" is not one igpt runs (prism, direct, dataflow); did you mean prism?`) {
				t.Errorf("%q --runner=prsm --dry_run=%s: %v", args, dry, err)
			}
		}
	}
}

// TestAsyncNeedsDataflow: --async is refused by run and stage with a
// runner whose job runs inside igpt, before any stage starts.
func TestAsyncNeedsDataflow(t *testing.T) {
	root := t.TempDir()
	cfg := tempConfig(t, "root: "+root+"\ndataset: {name: mnist}\n")
	t.Cleanup(func() { freshFlags(t, "async", "false") })
	for _, args := range [][]string{{"run", cfg}, {"stage", "download", cfg}} {
		freshFlags(t, "async", "true")
		err := dispatch(context.Background(), args)
		if err == nil || !strings.Contains(err.Error(), "--async needs --runner=dataflow") {
			t.Errorf("%q --async: %v", args, err)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) > 0 {
		t.Errorf("a refused --async run wrote %d entries under the root", len(entries))
	}
}

// TestNoPeakMemoryBeforeConfigError: a config error is the only thing run
// prints (an INFO "peak memory" line used to come first); a plan that was
// loaded (here a dry run) still ends with it.
func TestNoPeakMemoryBeforeConfigError(t *testing.T) {
	var logs bytes.Buffer
	saved := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(saved) })
	t.Cleanup(func() { freshFlags(t, "dry_run", "false") })

	freshFlags(t)
	bad := tempConfig(t, "train: {stpes: 5}\ndataset: {name: mnist}\n")
	if err := dispatch(context.Background(), []string{"run", bad}); err == nil || !strings.Contains(err.Error(), "did you mean train.steps?") {
		t.Fatalf("run with a misspelt key: %v", err)
	}
	if strings.Contains(logs.String(), "peak memory") {
		t.Errorf("a config error was preceded by a log line: %s", &logs)
	}
	freshFlags(t, "dry_run", "true")
	good := tempConfig(t, "root: "+t.TempDir()+"\ndataset: {name: mnist}\n")
	if err := dispatch(context.Background(), []string{"run", good}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "peak memory") {
		t.Errorf("a planned run did not end with its peak memory line: %s", &logs)
	}
}

// TestBadFlagValueHint: after the flag package's line about a bad value,
// igpt prints one line pointing at the command's help, not the 40-line
// usage that pushed the error off screen.
func TestBadFlagValueHint(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sample", "run/x", "--n", "many"}, "see: igpt help sample\n"},
		{[]string{"--n=x", "run", "c.yaml"}, "see: igpt help run\n"},
		{[]string{"--bogus"}, "see: igpt help\n"},
	} {
		var b bytes.Buffer
		flagErrorHint(&b, tc.args)
		if b.String() != tc.want {
			t.Errorf("flagErrorHint(%q) = %q, want %q", tc.args, b.String(), tc.want)
		}
	}
}

// TestMain runs igpt's main instead of the tests when IGPT_RUN_MAIN holds a
// command line, so a test can see what a user sees on stderr.
func TestMain(m *testing.M) {
	if line := os.Getenv("IGPT_RUN_MAIN"); line != "" {
		os.Args = append([]string{"igpt"}, strings.Fields(line)...)
		main()
		os.Exit(0)
	}
	code := m.Run()
	beamboot.RemoveEmptyWorkerBinary() // of the runs made in this process
	os.Exit(code)
}

// runMain runs igpt with args in a child process and returns its stderr.
func runMain(t *testing.T, args string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "IGPT_RUN_MAIN="+args)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Run()
	return stderr.String()
}

// TestUserSeesShortErrors: what igpt prints on stderr for a bad flag value
// (the error and a pointer to the command's help) and for a config error
// (the error alone, no log line before it).
func TestUserSeesShortErrors(t *testing.T) {
	got := runMain(t, "sample some/run --n many")
	if want := "invalid value \"many\" for flag -n: parse error\nsee: igpt help sample\n"; got != want {
		t.Errorf("bad flag value: stderr\n%s\nwant\n%s", got, want)
	}
	bad := tempConfig(t, "train: {stpes: 5}\ndataset: {name: mnist}\n")
	got = runMain(t, "run "+bad)
	if !strings.HasPrefix(got, "igpt: ") || strings.Count(got, "\n") != 1 || !strings.Contains(got, "did you mean train.steps?") {
		t.Errorf("config error: stderr\n%s\nwant one line, the error", got)
	}
}

// TestPlanWarnsOfLargeImages: a run planned on a folder of 224×224 images
// with the quickstart's 16×16 token grid prints a warning naming the config
// and download.resize.
func TestPlanWarnsOfLargeImages(t *testing.T) {
	src := t.TempDir()
	for _, split := range []string{"train", "test"} {
		d := filepath.Join(src, split, "cats")
		os.MkdirAll(d, 0o755)
		f, _ := os.Create(filepath.Join(d, "a.png"))
		png.Encode(f, image.NewGray(image.Rect(0, 0, 224, 224)))
		f.Close()
	}
	cfg := tempConfig(t, "root: "+t.TempDir()+"\ndataset: {name: folder, source: "+src+"}\nquantize: {resize: [16, 16]}\n")
	freshFlags(t)
	plan, err := loadPlan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	warnSize(&b, plan)
	if !strings.HasPrefix(b.String(), "igpt: warning: config "+cfg+": images are 224×224") || !strings.Contains(b.String(), "download.resize: 32") {
		t.Errorf("plan of 224×224 images at 16×16: %q", b.String())
	}
}
