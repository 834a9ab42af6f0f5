package datasets

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
)

// ErrChecksum is wrapped by Verify's error when a file's size or checksum
// does not match.
var ErrChecksum = errors.New("checksum mismatch")

// ChecksumError is Verify's error for a file whose size or checksum does
// not match; it wraps ErrChecksum.
type ChecksumError struct {
	Path string
	What string // "size", "sha256" or "md5"
	Got  string
	Want string
}

func (e *ChecksumError) mismatch() string {
	if e.What == "size" {
		return fmt.Sprintf("size is %s bytes, expected %s (an incomplete or different file)", e.Got, e.Want)
	}
	return fmt.Sprintf("%s is %s, expected %s", e.What, e.Got, e.Want)
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("datasets: verify %s: %s: %v", e.Path, e.mismatch(), ErrChecksum)
}

func (e *ChecksumError) Unwrap() error { return ErrChecksum }

// FetchOptions tune Fetch.
type FetchOptions struct {
	Retries  int           // retries after the first attempt; 0 means 5, negative means none
	Backoff  time.Duration // first retry delay, doubled each time (capped at 1 minute); 0 means 1s
	Progress io.Writer     // where to draw a progress bar; nil for none
	Client   *http.Client  // nil means a client with a 60s header timeout
	Logger   *slog.Logger  // nil means slog.Default()
	// Stall aborts an attempt (which is then retried, resuming) when no
	// bytes arrive for this long; 0 means 2 minutes.
	Stall time.Duration
	// Timeout bounds the whole download of one URL, retries included; 0
	// means 24 hours.
	Timeout time.Duration
	// MaxBytes bounds a download whose size is not known (no File.Size);
	// 0 means 1 TiB. A known size bounds it to that size.
	MaxBytes int64
}

func (o FetchOptions) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 24 * time.Hour
	}
	return o.Timeout
}

// limit is the most bytes a download of f may hold: its size when known
// and no alternative (of another size) is accepted, else MaxBytes.
func (o FetchOptions) limit(f File) int64 {
	if f.Size > 0 && len(f.AltSHA256) == 0 {
		return f.Size
	}
	if o.MaxBytes <= 0 {
		return 1 << 40
	}
	return o.MaxBytes
}

// maxNoProgress is how many attempts in a row may end, short, no further
// than the best before, before Fetch gives up: a server that sends less than
// its Content-Length and ignores Range requests never completes.
const maxNoProgress = 2

func (o FetchOptions) stall() time.Duration {
	if o.Stall <= 0 {
		return 2 * time.Minute
	}
	return o.Stall
}

func (o FetchOptions) retries() int {
	switch {
	case o.Retries < 0:
		return 0
	case o.Retries == 0:
		return 5
	}
	return o.Retries
}

func (o FetchOptions) backoff(attempt int) time.Duration {
	d := o.Backoff
	if d <= 0 {
		d = time.Second
	}
	for range attempt {
		d *= 2
		if d >= time.Minute {
			return time.Minute
		}
	}
	return d
}

var defaultClient = &http.Client{
	Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		ResponseHeaderTimeout: 60 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
	},
}

// Fetch downloads url to dst (a local path) atomically: it writes
// dst+".part", resumes an existing .part with an HTTP Range request (falling
// back to a full download if the server ignores Range), retries transient
// errors (connection drops mid-body, 5xx, 429, timeouts) with exponential
// backoff up to opt.Retries, shows a progress bar on opt.Progress when
// non-nil, verifies f.SHA256/f.MD5/f.Size when known, and renames to dst only
// when they match. On a mismatch it moves the file aside to dst+".bad" and
// returns an error (wrapping ErrChecksum) naming the file, the expected and
// actual checksums, and what to do. url may be http(s)://, file:// or a plain
// local path (copied, still verified). If dst already exists and verifies,
// Fetch returns at once.
func Fetch(ctx context.Context, rawURL string, f File, dst string, opt FetchOptions) error {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("url", rawURL, "dst", dst)
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		err := Verify(dst, f)
		if err == nil {
			log.Debug("datasets: fetch: already present and verified")
			return nil
		}
		log.Warn("datasets: fetch: the existing file does not verify; downloading it again", "err", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("datasets: fetch %s: %w", rawURL, err)
	}
	part := dst + ".part"
	name := f.Name
	if name == "" {
		name = filepath.Base(dst)
	}

	u, err := url.Parse(rawURL)
	scheme := ""
	if err == nil && strings.Contains(rawURL, "://") {
		scheme = strings.ToLower(u.Scheme)
	}
	resumed := false
	switch scheme {
	case "http", "https":
		resumed, err = fetchHTTP(ctx, rawURL, f, part, name, opt, log)
	case "file":
		p := u.Path
		if u.Host != "" && u.Host != "localhost" {
			p = "//" + u.Host + u.Path
		}
		err = copyLocal(ctx, p, part, name, opt)
	case "":
		err = copyLocal(ctx, rawURL, part, name, opt)
	default:
		return fmt.Errorf("datasets: fetch %s: unsupported scheme %q (use http(s)://, file:// or a local path)", rawURL, scheme)
	}
	if err != nil {
		return err
	}

	if err := Verify(part, f); err != nil {
		if !errors.Is(err, ErrChecksum) {
			return err
		}
		if resumed {
			// The parts may come from two versions of the file: try once
			// more from scratch before calling it bad.
			log.Warn("datasets: fetch: a resumed download does not verify; downloading it again from the start", "err", err)
			os.Remove(part)
			if _, err := fetchHTTP(ctx, rawURL, f, part, name, opt, log); err != nil {
				return err
			}
			err = Verify(part, f)
		}
		if err != nil {
			var ce *ChecksumError
			if !errors.As(err, &ce) {
				return err
			}
			bad := dst + ".bad"
			if rerr := os.Rename(part, bad); rerr != nil {
				return fmt.Errorf("datasets: fetch %s: %w (and could not move it aside: %v)", rawURL, err, rerr)
			}
			return fmt.Errorf("datasets: fetch %s: the download of %s does not match: %s: %w; it is kept as %s: delete it and run again; if it fails again, the file at that URL is not the one the registry describes (try a mirror)",
				rawURL, name, ce.mismatch(), ErrChecksum, bad)
		}
	}
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("datasets: fetch %s: %w", rawURL, err)
	}
	log.Info("datasets: fetched", "bytes", fileSize(dst))
	return nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func newBar(w io.Writer, total int64, name string) *progressbar.ProgressBar {
	if w == nil {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(name),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
}

// copyWithProgress copies r to w, stopping when ctx is done.
func copyWithProgress(ctx context.Context, w io.Writer, r io.Reader, bar *progressbar.ProgressBar) (int64, error) {
	if bar != nil {
		w = io.MultiWriter(w, bar)
	}
	return io.Copy(w, ctxReader{ctx, r})
}

func copyLocal(ctx context.Context, src, part, name string, opt FetchOptions) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("datasets: fetch %s: %w", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("datasets: fetch %s: %w", src, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("datasets: fetch %s: not a regular file", src)
	}
	out, err := os.Create(part)
	if err != nil {
		return fmt.Errorf("datasets: fetch %s: %w", src, err)
	}
	bar := newBar(opt.Progress, fi.Size(), name)
	_, err = copyWithProgress(ctx, out, in, bar)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("datasets: fetch %s to %s: %w", src, part, err)
	}
	if bar != nil {
		bar.Finish()
	}
	return nil
}

// ErrUnreachable is wrapped by Fetch's error when the server cannot be
// reached at all (its name does not resolve, or it refuses or cannot be
// routed to): not retried, since waiting rarely brings a network back.
var ErrUnreachable = errors.New("cannot reach the server (offline?)")

// unreachable reports whether a request error means no connection could
// be made: a DNS failure, a refused or unroutable connection. answered says
// whether the host has answered this download before (a response in an
// earlier attempt, or bytes already in the partial file): then a refused,
// reset or unroutable connection is a server restarting or a network
// blinking, transient, and only a name that no longer resolves still means
// offline. This is the one place that tells "offline?" from "retry".
func unreachable(err error, answered bool) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	if answered {
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH)
}

// keptPart says that the partial download part is kept for a later run to
// resume, or nothing when there is none.
func keptPart(part string) string {
	if fileSize(part) > 0 {
		return "; the partial download " + part + " is kept: run again to resume"
	}
	return ""
}

// httpError is a failed attempt; retry says whether another may succeed.
type httpError struct {
	err        error
	retry      bool
	retryAfter time.Duration
	body       bool // the body ended early (after a 200 or 206)
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

// fetchHTTP downloads rawURL into part, resuming and retrying. It reports
// whether the result was assembled from more than one response.
func fetchHTTP(ctx context.Context, rawURL string, f File, part, name string, opt FetchOptions, log *slog.Logger) (bool, error) {
	client := opt.Client
	if client == nil {
		client = defaultClient
	}
	retries := opt.retries()
	resumed := false
	parent := ctx
	errTimeout := fmt.Errorf("gave up after %v, the time limit for one download (FetchOptions.Timeout)", opt.timeout())
	ctx, cancel := context.WithTimeoutCause(parent, opt.timeout(), errTimeout)
	defer cancel()
	start := time.Now()
	best, noProgress := max(fileSize(part), 0), 0
	// Bytes kept from an earlier run came from this server: it answered.
	answered := best > 0
	for attempt := 0; ; attempt++ {
		r, err := httpAttempt(ctx, client, rawURL, f, part, name, opt.Progress, opt.stall(), opt.limit(f), &answered, log)
		resumed = resumed || r
		if err == nil {
			return resumed, nil
		}
		if parent.Err() == nil && context.Cause(ctx) == errTimeout {
			return resumed, fmt.Errorf("datasets: fetch %s: %w, in %d attempts (%v)%s; or try a mirror", rawURL, errTimeout, attempt+1, time.Since(start).Round(time.Millisecond), keptPart(part))
		}
		if ctx.Err() != nil {
			return resumed, fmt.Errorf("datasets: fetch %s: %w%s", rawURL, ctx.Err(), keptPart(part))
		}
		var he *httpError
		if !errors.As(err, &he) || !he.retry {
			return resumed, fmt.Errorf("datasets: fetch %s: %w", rawURL, err)
		}
		if he.body {
			if got := fileSize(part); got > best {
				best, noProgress = got, 0
			} else if noProgress++; noProgress >= maxNoProgress {
				return resumed, fmt.Errorf("datasets: fetch %s: %d attempts in a row ended at or before byte %d without getting further (%v): the server sends less than it announces and does not resume (it ignores Range requests); giving up: try a mirror or run again later: %w", rawURL, noProgress+1, best, time.Since(start).Round(time.Millisecond), err)
			}
		}
		if attempt >= retries {
			return resumed, fmt.Errorf("datasets: fetch %s: giving up after %d attempts: %w%s", rawURL, attempt+1, err, keptPart(part))
		}
		delay := max(opt.backoff(attempt), min(he.retryAfter, 5*time.Minute))
		log.Warn("datasets: fetch: transient error; retrying", "attempt", attempt+1, "of", retries+1, "in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if parent.Err() == nil && context.Cause(ctx) == errTimeout {
				return resumed, fmt.Errorf("datasets: fetch %s: %w, in %d attempts (%v), the last: %w%s; or try a mirror", rawURL, errTimeout, attempt+1, time.Since(start).Round(time.Millisecond), err, keptPart(part))
			}
			return resumed, fmt.Errorf("datasets: fetch %s: %w%s", rawURL, ctx.Err(), keptPart(part))
		case <-t.C:
		}
	}
}

// parseContentRange parses "bytes a-b/n" (n may be "*": -1), or "bytes */n".
func parseContentRange(s string) (start, total int64, ok bool) {
	s, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		n, err := strconv.ParseInt(tot, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total = n
	}
	if rng == "*" {
		return -1, total, true
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return start, total, true
}

func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// httpAttempt makes one request, appending to part when the server honours a
// Range request. It reports whether it resumed.
//
// It writes at most limit bytes in all: a body that goes on (a server that
// never ends it) stops there with an error.
//
// answered is set once the server has sent a response; sendRequest reads it.
func httpAttempt(parent context.Context, client *http.Client, rawURL string, f File, part, name string, progress io.Writer, stall time.Duration, limit int64, answered *bool, log *slog.Logger) (bool, error) {
	// The attempt is cancelled when no bytes arrive for the stall time.
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	errStalled := fmt.Errorf("no data for %v", stall)
	watchdog := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer watchdog.Stop()
	off := fileSize(part)
	if off < 0 {
		off = 0
	}
	if f.Size > 0 && off > f.Size {
		log.Warn("datasets: fetch: the partial download is larger than the file; starting again", "part", part, "bytes", off)
		off = 0
	}
	if f.Size > 0 && off == f.Size {
		return false, nil // complete: verify it
	}
	resp, err := sendRequest(ctx, client, rawURL, off, errStalled, *answered)
	if err != nil {
		return false, err
	}
	*answered = true
	defer resp.Body.Close()
	resumed, done, err := rangeOutcome(resp, off, part, log)
	if done || err != nil {
		return resumed, err
	}
	if !resumed {
		off = 0
	}
	b := bodyCopy{ctx: ctx, parent: parent, f: f, part: part, name: name, off: off, limit: limit, errStalled: errStalled}
	return resumed, b.receive(resp, resumed, progress, &stallReader{r: resp.Body, watchdog: watchdog, stall: stall})
}

// sendRequest asks for rawURL from byte off on. A server that cannot be
// reached at first contact is not retried (ErrUnreachable); other failures
// are, and so is a refused connection once the server has answered
// (answered): it is restarting, and the retry resumes with Range.
func sendRequest(ctx context.Context, client *http.Client, rawURL string, off int64, errStalled error, answered bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, &httpError{err: err}
	}
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "igpt-datasets/1")
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := client.Do(req)
	if err != nil {
		if context.Cause(ctx) == errStalled {
			err = errStalled
		}
		if unreachable(err, answered) {
			return nil, &httpError{err: fmt.Errorf("%w: %w", ErrUnreachable, err)}
		}
		if answered {
			err = fmt.Errorf("the server answered before, so this is taken as transient (restarting?): %w", err)
		}
		return nil, &httpError{err: err, retry: true}
	}
	return resp, nil
}

// rangeOutcome reads the response status: whether the body continues the
// partial download at off (resumed), whether the part is already complete
// (done), or the error for this attempt.
func rangeOutcome(resp *http.Response, off int64, part string, log *slog.Logger) (resumed, done bool, err error) {
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		start, _, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			os.Remove(part)
			return false, false, &httpError{err: fmt.Errorf("asked for bytes from %d, got Content-Range %q; starting again", off, resp.Header.Get("Content-Range")), retry: true}
		}
		log.Info("datasets: fetch: resuming", "from", off)
		return true, false, nil
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			log.Info("datasets: fetch: the server ignored the Range request; downloading from the start", "had", off)
		}
		return false, false, nil
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && off > 0:
		if _, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && total == off {
			return true, true, nil // the part is already complete
		}
		os.Remove(part)
		return false, false, &httpError{err: fmt.Errorf("HTTP %s for a range from %d; starting again", resp.Status, off), retry: true}
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return false, false, &httpError{err: fmt.Errorf("HTTP %s", resp.Status), retry: true, retryAfter: retryAfter(resp.Header)}
	default:
		return false, false, &httpError{err: fmt.Errorf("HTTP %s (check the URL; the file may have moved — try a mirror)", resp.Status)}
	}
}

// bodyCopy is one attempt's copy of a response body into the part file,
// which already holds off bytes.
type bodyCopy struct {
	ctx, parent context.Context
	f           File
	part, name  string
	off, limit  int64
	errStalled  error
}

// receive writes the body (appending when resumed), at most limit bytes
// in all: a body that goes on (a server that never ends it) stops there
// with an error.
func (b *bodyCopy) receive(resp *http.Response, resumed bool, progress io.Writer, body io.Reader) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if resumed {
		flags = os.O_WRONLY | os.O_APPEND
	}
	out, err := os.OpenFile(b.part, flags, 0o644)
	if err != nil {
		return &httpError{err: err}
	}
	off, f, limit := b.off, b.f, b.limit
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = off + resp.ContentLength
	} else if f.Size > 0 {
		total = f.Size
	}
	bar := newBar(progress, total, b.name)
	if bar != nil && off > 0 {
		bar.Set64(off)
	}
	// One byte past the limit tells a body that goes on from one that ends.
	n, err := copyWithProgress(b.ctx, out, io.LimitReader(body, limit-off+1), bar)
	if err == nil && off+n > limit {
		return b.overLimit(out)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return b.failed(err, n)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return &httpError{err: fmt.Errorf("body ended after %d of %d bytes", n, resp.ContentLength), retry: true, body: true}
	}
	if f.Size > 0 && off+n < f.Size {
		return &httpError{err: fmt.Errorf("got %d of %d bytes", off+n, f.Size), retry: true, body: true}
	}
	if bar != nil {
		bar.Finish()
	}
	return nil
}

// overLimit cuts the part at the limit after a body that went past it.
func (b *bodyCopy) overLimit(out *os.File) error {
	err := out.Truncate(b.limit)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return b.failed(err, b.limit-b.off)
	}
	if b.f.Size > 0 && b.limit == b.f.Size {
		return &httpError{err: fmt.Errorf("the server sent more than the %d bytes expected; stopped there (%s holds the first %d)", b.f.Size, b.part, b.limit)}
	}
	return &httpError{err: fmt.Errorf("the body goes on past %d bytes (FetchOptions.MaxBytes, for a file of unknown size); stopped there: give the file's size in the registry or config, or raise the limit", b.limit)}
}

// failed classifies an error while writing n bytes of the body.
func (b *bodyCopy) failed(err error, n int64) error {
	if b.parent.Err() != nil {
		return b.parent.Err()
	}
	if context.Cause(b.ctx) == b.errStalled {
		err = b.errStalled
	}
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Path == b.part {
		return &httpError{err: fmt.Errorf("writing %s: %w", b.part, err)}
	}
	return &httpError{err: fmt.Errorf("after %d bytes: %w", b.off+n, err), retry: true, body: true}
}

// stallReader pushes a watchdog back at every read that returns data.
type stallReader struct {
	r        io.Reader
	watchdog *time.Timer
	stall    time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.watchdog.Reset(s.stall)
	}
	return n, err
}

// Verify checks a local file against f's checksums (sha256 and/or md5) and
// size, whichever are known. A file whose sha256 is one of f.AltSHA256
// verifies too. Mismatches wrap ErrChecksum.
func Verify(path string, f File) error {
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("datasets: verify: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("datasets: verify: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("datasets: verify %s: not a regular file", path)
	}
	if f.SHA256 == "" && f.MD5 == "" && len(f.AltSHA256) == 0 {
		if f.Size > 0 && fi.Size() != f.Size {
			return sizeErr(path, fi.Size(), f.Size)
		}
		return nil
	}
	if f.Size > 0 && fi.Size() != f.Size && len(f.AltSHA256) == 0 {
		return sizeErr(path, fi.Size(), f.Size)
	}
	sh, mh := sha256.New(), md5.New()
	var hs []io.Writer
	if f.SHA256 != "" || len(f.AltSHA256) > 0 {
		hs = append(hs, sh)
	}
	if f.MD5 != "" {
		hs = append(hs, mh)
	}
	if _, err := io.Copy(io.MultiWriter(hs...), in); err != nil {
		return fmt.Errorf("datasets: verify %s: %w", path, err)
	}
	gotSHA := hex.EncodeToString(sh.Sum(nil))
	if slices.ContainsFunc(f.AltSHA256, func(s string) bool { return strings.EqualFold(s, gotSHA) }) {
		return nil
	}
	if f.Size > 0 && fi.Size() != f.Size {
		return sizeErr(path, fi.Size(), f.Size)
	}
	for _, c := range []struct {
		algo, want string
		h          hash.Hash
	}{{"sha256", f.SHA256, sh}, {"md5", f.MD5, mh}} {
		if c.want == "" {
			continue
		}
		if got := hex.EncodeToString(c.h.Sum(nil)); !strings.EqualFold(got, c.want) {
			return &ChecksumError{Path: path, What: c.algo, Got: got, Want: strings.ToLower(c.want)}
		}
	}
	return nil
}

// FetchFile fetches f to dst from f.URL, then from each of f.Mirrors in turn
// until one succeeds. It returns the last error, joined with the others.
func FetchFile(ctx context.Context, f File, dst string, opt FetchOptions) error {
	var errs []error
	for _, u := range append([]string{f.URL}, f.Mirrors...) {
		if u == "" {
			continue
		}
		err := Fetch(ctx, u, f, dst, opt)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return fmt.Errorf("datasets: fetch %s: no URL", f.Name)
	}
	return errors.Join(errs...)
}

func sizeErr(path string, got, want int64) error {
	return &ChecksumError{Path: path, What: "size", Got: strconv.FormatInt(got, 10), Want: strconv.FormatInt(want, 10)}
}

// TreeDigestCommand computes TreeSHA256 of the current folder with
// coreutils, for messages and docs.
const TreeDigestCommand = `find . -xtype f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum`

// TreeSHA256 is the digest of a folder source that dataset.sha256 names:
// the sha256 of the lines "<sha256 of the file>  <path>\n" (sha256sum's
// format), one for every file under dir (regular files and links to them,
// hidden ones included; links to folders are not followed), paths relative
// to dir with "/", sorted bytewise. TreeDigestCommand computes the same in
// dir. A path holding a newline or backslash is refused (sha256sum would
// escape it).
func TreeSHA256(ctx context.Context, dir string) (string, error) {
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("datasets: digest of %s: %w", dir, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.ContainsAny(rel, "\n\\") {
			return fmt.Errorf("datasets: digest of %s: the file name %q holds a newline or backslash; rename it", dir, rel)
		}
		in, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("datasets: digest of %s: %w", dir, err)
		}
		defer in.Close()
		h := sha256.New()
		if _, err := io.Copy(h, ctxReader{ctx, in}); err != nil {
			return fmt.Errorf("datasets: digest of %s: %s: %w", dir, p, err)
		}
		lines = append(lines, hex.EncodeToString(h.Sum(nil))+"  "+rel+"\n")
		return nil
	})
	if err != nil {
		return "", err
	}
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VerifyTree checks a folder source against dataset.sha256 (TreeSHA256).
func VerifyTree(ctx context.Context, dir, want string) error {
	got, err := TreeSHA256(ctx, dir)
	if err != nil {
		return err
	}
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("datasets: verify folder %s: its digest is %s, expected %s (dataset.sha256 of a folder is the sha256 of the sorted sha256sum lines of its files: in the folder run %s): the folder differs from the one the digest was made of: %w",
			dir, got, strings.ToLower(want), TreeDigestCommand, ErrChecksum)
	}
	return nil
}
