package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReliability29_12_UserFileCapsAndContext: a user-given file over its
// cap is refused before it is read, and a read stops once its context is
// cancelled (cmd/igpt cancels it on SIGTERM).
func TestReliability29_12_UserFileCapsAndContext(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(p, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadUserFile(ctx, p, 1<<20); !errors.Is(err, ErrTooBig) {
		t.Errorf("3 MiB file with a 1 MiB cap: %v", err)
	}
	if b, err := ReadUserFile(ctx, p, 4<<20); err != nil || len(b) != 3<<20 {
		t.Errorf("3 MiB file with a 4 MiB cap: %d bytes, %v", len(b), err)
	}
	rc, err := OpenUserFile(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	cctx, cancel := context.WithCancel(ctx)
	rc2, err := OpenUserFile(cctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.Close()
	buf := make([]byte, 1<<10)
	if _, err := rc2.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := rc2.Read(buf); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
	if _, err := ReadUserFile(ctx, t.TempDir(), 0); !errors.Is(err, ErrNotRegular) {
		t.Errorf("a folder: %v", err)
	}
}
