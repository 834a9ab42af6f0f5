package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/igpt/igpt/internal/progress"
)

// setLogLevel makes the default logger write text lines at level s to
// standard error (clearing a progress bar drawn there first), with Beam's
// own lines below warnings shown only at debug.
func setLogLevel(s string) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		fmt.Fprintf(os.Stderr, "igpt: --log_level: %v\n", err)
		os.Exit(2)
	}
	h := slog.NewTextHandler(progress.Writer(os.Stderr), &slog.HandlerOptions{Level: l})
	slog.SetDefault(slog.New(quietBeam{h, l <= slog.LevelDebug}))
}

// quietBeam drops the records that Beam's SDK and the prism runner log
// (job submitted, workers started, pipeline done: a dozen lines per stage)
// below warning level unless debug logging is on. Beam logs through the
// default slog logger, so its records are told apart by the function that
// logged them.
type quietBeam struct {
	slog.Handler
	debug bool
}

func (q quietBeam) Handle(ctx context.Context, r slog.Record) error {
	if !q.debug && r.Level < slog.LevelWarn && fromBeam(r.PC) {
		return nil
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietBeam) WithAttrs(as []slog.Attr) slog.Handler {
	return quietBeam{q.Handler.WithAttrs(as), q.debug}
}

func (q quietBeam) WithGroup(name string) slog.Handler {
	return quietBeam{q.Handler.WithGroup(name), q.debug}
}

// fromBeam reports whether the log call at pc is in Beam's code.
func fromBeam(pc uintptr) bool {
	f := runtime.FuncForPC(pc)
	return f != nil && strings.HasPrefix(f.Name(), "github.com/apache/beam/")
}
