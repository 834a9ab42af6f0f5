package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igpt/igpt/internal/storage"
)

// TestReliability29_12_UserFilesRegularOnly: every command that opens a
// user-given file (sample --complete, inspect, show, run's config,
// import-hf) refuses a FIFO or a device through storage.StatUserFile,
// naming it, where sample --complete /dev/zero and inspect FIFO never
// ended. A command still reading after a generous minute fails the test.
func TestReliability29_12_UserFilesRegularOnly(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe.msgpack")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	hf := filepath.Join(dir, "hf")
	os.MkdirAll(hf, 0o755)
	os.WriteFile(filepath.Join(hf, "config.json"), []byte(`{"n_layer":1}`), 0o644)
	if err := syscall.Mkfifo(filepath.Join(hf, "model.safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.png")
	for _, tc := range []struct {
		name  string
		args  []string
		flags []string
		file  string
	}{
		{"sample --complete FIFO", []string{"sample", dir}, []string{"complete", fifo, "out", out}, fifo},
		{"sample --complete /dev/zero", []string{"sample", dir}, []string{"complete", "/dev/zero", "out", out}, "/dev/zero"},
		{"inspect FIFO", []string{"inspect", fifo}, nil, fifo},
		{"inspect /dev/zero", []string{"inspect", "/dev/zero"}, nil, "/dev/zero"},
		{"show tokens FIFO", []string{"show", "tokens", fifo}, []string{"out", out}, fifo},
		{"run FIFO config", []string{"run", fifo}, nil, fifo},
		{"import-hf FIFO weights", []string{"import-hf", hf}, []string{"out", out}, filepath.Join(hf, "model.safetensors")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.file); err != nil {
				t.Skip(err)
			}
			freshFlags(t, tc.flags...)
			done := make(chan error, 1)
			go func() { done <- dispatch(context.Background(), tc.args) }()
			select {
			case err := <-done:
				if !errors.Is(err, storage.ErrNotRegular) || !strings.Contains(strings.SplitN(err.Error(), "\n", 2)[0], tc.file) {
					t.Fatalf("want an error naming %s as not a regular file: %v", tc.file, err)
				}
			case <-time.After(time.Minute):
				t.Fatalf("%v still reading %s after a minute", tc.args, tc.file)
			}
		})
	}
}
