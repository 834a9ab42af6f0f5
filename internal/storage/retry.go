package storage

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"google.golang.org/api/googleapi"
)

// RetryPolicy controls retries of transient errors.
type RetryPolicy struct {
	Attempts int           // total attempts, at least 1
	Initial  time.Duration // first backoff
	Max      time.Duration // backoff cap
}

// DefaultRetry is used by every call in this package.
var DefaultRetry = RetryPolicy{Attempts: 6, Initial: 200 * time.Millisecond, Max: 10 * time.Second}

// Transient reports whether err is worth retrying: network resets and
// timeouts, truncated bodies, and HTTP 408, 429 and 5xx answers.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || notExist(err) {
		return false
	}
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		return gerr.Code == 408 || gerr.Code == 429 || gerr.Code >= 500
	}
	var operr *net.OpError
	if errors.As(err, &operr) {
		return true
	}
	var nerr net.Error // *os.PathError has Timeout too: only a real timeout counts
	if errors.As(err, &nerr) && nerr.Timeout() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// Retry runs f until it succeeds, fails permanently, or the attempts run out,
// sleeping with jittered exponential backoff between attempts.
func Retry(ctx context.Context, p RetryPolicy, f func() error) error {
	delay := p.Initial
	var err error
	for attempt := 1; ; attempt++ {
		if err = f(); err == nil || !Transient(err) || attempt >= p.Attempts {
			return err
		}
		sleep := delay/2 + time.Duration(rand.Int64N(int64(delay)))
		slog.Warn("storage: transient error, retrying", "attempt", attempt, "in", sleep, "err", err)
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(sleep):
		}
		delay = min(2*delay, p.Max)
	}
}

func retry(ctx context.Context, f func() error) error { return Retry(ctx, DefaultRetry, f) }
