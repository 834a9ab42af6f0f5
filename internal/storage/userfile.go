package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotRegular is returned (wrapped) for a user-given input that is not a
// regular file: a FIFO, a device (/dev/zero), a socket or a folder, whose
// reading may block or never end.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooBig is returned (wrapped) for a user-given input over its cap.
var ErrTooBig = errors.New("too big")

// StatUserFile checks p, a file the user named (on the command line, or a
// config, a picture, weights to import), before anything opens it: a
// regular file (gs:// objects are) of at most max bytes (max ≤ 0: no cap).
// It returns the size. Every command that reads such a file goes through
// it, or through OpenUserFile and ReadUserFile, which call it.
func StatUserFile(ctx context.Context, p string, max int64) (int64, error) {
	var size int64
	if IsGCS(p) {
		s, err := Size(ctx, p)
		if err != nil {
			return 0, err
		}
		size = s
	} else {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, wrap("stat", p, err)
		}
		if err := regular(p, fi); err != nil {
			return 0, err
		}
		size = fi.Size()
	}
	if max > 0 && size > max {
		return 0, fmt.Errorf("storage: %s is %d bytes, more than the %d allowed for it: %w", p, size, max, ErrTooBig)
	}
	return size, nil
}

func regular(p string, fi fs.FileInfo) error {
	if fi.Mode().IsRegular() {
		return nil
	}
	kind := "special file"
	switch m := fi.Mode(); {
	case m.IsDir():
		kind = "folder"
	case m&fs.ModeNamedPipe != 0:
		kind = "named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0, m&fs.ModeDevice != 0:
		kind = "device"
	case m&fs.ModeSocket != 0:
		kind = "socket"
	}
	return fmt.Errorf("storage: %s is a %s, %w: give a file", p, kind, ErrNotRegular)
}

// OpenUserFile opens p once StatUserFile accepts it. A local file is
// opened non-blocking and checked again, so a FIFO swapped in meanwhile
// neither blocks the open nor is read. The reader fails with ctx's error
// once ctx is done (cmd/igpt cancels it on SIGINT and SIGTERM), and with
// ErrTooBig past max bytes (a file that grew).
func OpenUserFile(ctx context.Context, p string, max int64) (io.ReadCloser, error) {
	if _, err := StatUserFile(ctx, p, max); err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	if IsGCS(p) {
		var err error
		if rc, err = Open(ctx, p); err != nil {
			return nil, err
		}
	} else {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, wrap("open", p, err)
		}
		fi, err := f.Stat()
		if err == nil {
			err = regular(p, fi)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		rc = f
	}
	return &userReader{ctx: ctx, rc: rc, path: p, max: max}, nil
}

// ReadUserFile reads all of p through OpenUserFile.
func ReadUserFile(ctx context.Context, p string, max int64) ([]byte, error) {
	rc, err := OpenUserFile(ctx, p, max)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// userReader reads a user-given file, stopping on ctx and past max.
type userReader struct {
	ctx  context.Context
	rc   io.ReadCloser
	path string
	max  int64
	n    int64
}

func (r *userReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, fmt.Errorf("storage: read %s: stopped at byte %d: %w", r.path, r.n, err)
	}
	if len(b) > 1<<20 {
		b = b[:1<<20] // check ctx at least every MiB
	}
	n, err := r.rc.Read(b)
	r.n += int64(n)
	if r.max > 0 && r.n > r.max {
		return n, fmt.Errorf("storage: read %s: more than the %d bytes allowed for it (it grew while read): %w", r.path, r.max, ErrTooBig)
	}
	if err != nil && err != io.EOF {
		err = wrap("read", r.path, err)
	}
	return n, err
}

func (r *userReader) Close() error { return r.rc.Close() }
