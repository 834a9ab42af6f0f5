package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
)

// Locks. A lock is a small file or object whose exclusive creation is the
// acquisition: locally a hard link of a fully written temporary file (link
// fails if the name exists, and the lock never appears half written), on
// GCS an object written with the precondition DoesNotExist. It holds who
// took it (LockInfo). The holder refreshes it every LockOptions.Heartbeat;
// a lock is stale, and is taken over, when its holder's process is gone
// from this host or it was not refreshed for LockOptions.StaleAfter. A
// takeover is itself exclusive: on GCS a delete conditioned on the stale
// generation, locally a rename of the stale file to a private name that is
// checked to still hold the stale token (a fresh lock renamed by mistake
// is linked back).

// LockInfo is what a lock file holds.
type LockInfo struct {
	PID   int       `json:"pid"`
	Host  string    `json:"host"`
	Time  time.Time `json:"time"`
	Token string    `json:"token"`
}

func (i LockInfo) String() string {
	return fmt.Sprintf("pid %d on %s since %s", i.PID, i.Host, i.Time.Format(time.RFC3339))
}

// LockOptions tune Lock; zero values take the defaults.
type LockOptions struct {
	Heartbeat  time.Duration // how often the holder refreshes the lock (30s)
	StaleAfter time.Duration // an unrefreshed lock older than this is stale (5m)
	Poll       time.Duration // how often a waiter retries (2s)
	Log        *slog.Logger
}

func (o LockOptions) withDefaults() LockOptions {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 30 * time.Second
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 10 * o.Heartbeat
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// ErrLockHeld is wrapped by TryLock's error when another live holder has
// the lock.
var ErrLockHeld = errors.New("lock held")

// ErrLockLost is wrapped by Lock.Check's error when the lock no longer
// holds this holder's token.
var ErrLockLost = errors.New("lock lost")

// Lock is a held lock.
type Lock struct {
	path string
	info LockInfo
	opt  LockOptions

	mu   sync.Mutex
	gen  int64 // GCS generation of our lock object
	stop chan struct{}
	done chan struct{}
}

// Path is the lock's file or object.
func (l *Lock) Path() string { return l.path }

// AcquireLock takes the lock at p, waiting (polling) while a live holder
// has it, until ctx ends.
func AcquireLock(ctx context.Context, p string, opt LockOptions) (*Lock, error) {
	opt = opt.withDefaults()
	var logged time.Time
	for {
		l, err := TryLock(ctx, p, opt)
		if err == nil || !errors.Is(err, ErrLockHeld) {
			return l, err
		}
		if time.Since(logged) > time.Minute {
			opt.Log.Warn("waiting for a lock another run holds", "lock", p, "err", err)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w; gave up waiting: %w", err, ctx.Err())
		case <-time.After(opt.Poll):
		}
	}
}

// TryLock takes the lock at p once: a live holder gives an error wrapping
// ErrLockHeld that names it; a stale lock is taken over.
func TryLock(ctx context.Context, p string, opt LockOptions) (*Lock, error) {
	opt = opt.withDefaults()
	host, _ := os.Hostname()
	tok := make([]byte, 8)
	rand.Read(tok)
	l := &Lock{path: p, opt: opt, info: LockInfo{PID: os.Getpid(), Host: host, Time: time.Now().UTC(), Token: hex.EncodeToString(tok)}}
	body, _ := json.Marshal(l.info)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var holder *LockInfo
		var took bool
		if IsGCS(p) {
			took, holder, err = l.tryGCS(ctx, body)
		} else {
			took, holder, err = l.tryLocal(body)
		}
		if err != nil {
			return nil, fmt.Errorf("storage: lock %s: %w", p, err)
		}
		if took {
			l.stop, l.done = make(chan struct{}), make(chan struct{})
			go l.heartbeat()
			return l, nil
		}
		if holder != nil {
			return nil, fmt.Errorf("storage: lock %s is held by %s: %w (wait for that run, or delete the lock file if no such run exists)", p, holder, ErrLockHeld)
		}
		// A stale lock was removed: try again.
	}
	return nil, fmt.Errorf("storage: lock %s: still contended after removing stale locks: %w", p, ErrLockHeld)
}

// stale reports whether a lock with info last refreshed at mod is stale.
// A garbled lock (info nil: see readLockInfo) is stale at once: a lock is
// never half written (a link of a complete file, a GCS object), so no
// live holder wrote it.
func (l *Lock) stale(info *LockInfo, mod time.Time) bool {
	if info == nil || time.Since(mod) > l.opt.StaleAfter {
		return true
	}
	if info != nil && info.Host == l.info.Host && info.PID > 0 && !processAlive(info.PID) {
		return true
	}
	return false
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// readLockInfo parses a lock's body; nil means garbled: not JSON, or
// without a pid, a host or a token.
func readLockInfo(b []byte) *LockInfo {
	var i LockInfo
	if json.Unmarshal(b, &i) != nil || i.Token == "" || i.PID <= 0 || i.Host == "" {
		return nil
	}
	return &i
}

// tryLocal returns took, or the live holder, or (false, nil) after
// removing a stale lock.
func (l *Lock) tryLocal(body []byte) (bool, *LockInfo, error) {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
		return false, nil, err
	}
	tmp := l.path + tempMarker + l.info.Token
	if err := os.WriteFile(tmp, body, 0o644); err != nil {
		return false, nil, err
	}
	defer os.Remove(tmp)
	err := os.Link(tmp, l.path)
	if err == nil {
		return true, nil, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return false, nil, err
	}
	b, rerr := os.ReadFile(l.path)
	st, serr := os.Stat(l.path)
	if errors.Is(rerr, os.ErrNotExist) || errors.Is(serr, os.ErrNotExist) {
		return false, nil, nil // released meanwhile
	}
	if rerr != nil || serr != nil {
		return false, nil, errors.Join(rerr, serr)
	}
	info := readLockInfo(b)
	if !l.stale(info, st.ModTime()) {
		return false, info, nil
	}
	// Take the stale lock over: move it aside, then make sure what moved
	// is the stale lock and not a fresh one taken meanwhile.
	tomb := l.path + ".stale-" + l.info.Token
	if err := os.Rename(l.path, tomb); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil, nil
		}
		return false, nil, err
	}
	defer os.Remove(tomb)
	moved, _ := os.ReadFile(tomb)
	if string(moved) != string(b) {
		os.Link(tomb, l.path) // put the fresh lock back; fails only if yet another exists
		holder := readLockInfo(moved)
		if holder == nil {
			holder = &LockInfo{Host: "?"}
		}
		return false, holder, nil
	}
	l.opt.Log.Warn("took over a stale lock", "lock", l.path, "holder", info, "modified", st.ModTime())
	return false, nil, nil
}

var (
	gcsMu      sync.Mutex
	gcsClients = map[string]*gcs.Client{}
)

func gcsObject(ctx context.Context, p string) (*gcs.ObjectHandle, error) {
	rest := strings.TrimPrefix(p, "gs://")
	bucket, object, ok := strings.Cut(rest, "/")
	if !ok || bucket == "" || object == "" {
		return nil, fmt.Errorf("%s is not gs://bucket/object", p)
	}
	gcsMu.Lock()
	defer gcsMu.Unlock()
	key := os.Getenv("STORAGE_EMULATOR_HOST")
	c, ok := gcsClients[key]
	if !ok {
		var err error
		if c, err = gcs.NewClient(context.WithoutCancel(ctx)); err != nil {
			return nil, err
		}
		gcsClients[key] = c
	}
	return c.Bucket(bucket).Object(object), nil
}

func preconditionFailed(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && (ge.Code == 412 || ge.Code == 409)
}

func (l *Lock) tryGCS(ctx context.Context, body []byte) (bool, *LockInfo, error) {
	obj, err := gcsObject(ctx, l.path)
	if err != nil {
		return false, nil, err
	}
	w := obj.If(gcs.Conditions{DoesNotExist: true}).NewWriter(ctx)
	w.ContentType = "application/json"
	if _, err := w.Write(body); err != nil {
		w.Close()
		return false, nil, err
	}
	err = w.Close()
	if err == nil {
		l.gen = w.Attrs().Generation
		return true, nil, nil
	}
	if !preconditionFailed(err) {
		return false, nil, err
	}
	attrs, err := obj.Attrs(ctx)
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	r, err := obj.Generation(attrs.Generation).NewReader(ctx)
	var info *LockInfo
	if err == nil {
		b, _ := io.ReadAll(io.LimitReader(r, 1<<16))
		r.Close()
		info = readLockInfo(b)
	}
	if !l.stale(info, attrs.Updated) {
		return false, info, nil
	}
	err = obj.If(gcs.Conditions{GenerationMatch: attrs.Generation}).Delete(ctx)
	if err != nil && !preconditionFailed(err) && !errors.Is(err, gcs.ErrObjectNotExist) {
		return false, nil, err
	}
	if err == nil {
		l.opt.Log.Warn("took over a stale lock", "lock", l.path, "holder", info, "updated", attrs.Updated)
	}
	return false, nil, nil
}

// heartbeat refreshes the lock until Release.
func (l *Lock) heartbeat() {
	defer close(l.done)
	t := time.NewTicker(l.opt.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.refresh(); err != nil {
				l.opt.Log.Warn("lock refresh failed", "lock", l.path, "err", err)
			}
		}
	}
}

func (l *Lock) refresh() error {
	ctx, cancel := context.WithTimeout(context.Background(), l.opt.Heartbeat)
	defer cancel()
	if err := l.Check(ctx); err != nil {
		return err
	}
	if !IsGCS(l.path) {
		now := time.Now()
		return os.Chtimes(l.path, now, now)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	obj, err := gcsObject(ctx, l.path)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(l.info)
	write := func() error {
		w := obj.If(gcs.Conditions{GenerationMatch: l.gen}).NewWriter(ctx)
		w.Write(body)
		if err := w.Close(); err != nil {
			return err
		}
		l.gen = w.Attrs().Generation
		return nil
	}
	err = write()
	if !preconditionFailed(err) {
		return err
	}
	// The generation moved without another holder: an earlier refresh
	// landed after its client gave up (a timeout under load), so every
	// later refresh failed its precondition. If the object still holds
	// this run's token, adopt its generation and write again.
	attrs, aerr := obj.Attrs(ctx)
	if aerr != nil {
		return fmt.Errorf("storage: lock %s: %w (and reading its generation: %v)", l.path, err, aerr)
	}
	if cerr := l.Check(ctx); cerr != nil {
		return cerr
	}
	l.gen = attrs.Generation
	return write()
}

// Check returns an error wrapping ErrLockLost unless the lock still holds
// this holder's token.
func (l *Lock) Check(ctx context.Context) error {
	var b []byte
	var err error
	if IsGCS(l.path) {
		var obj *gcs.ObjectHandle
		if obj, err = gcsObject(ctx, l.path); err == nil {
			var r *gcs.Reader
			if r, err = obj.NewReader(ctx); err == nil {
				b, err = io.ReadAll(io.LimitReader(r, 1<<16))
				r.Close()
			}
		}
	} else {
		b, err = os.ReadFile(l.path)
	}
	if err != nil && !notExist(err) {
		return fmt.Errorf("storage: lock %s: %w", l.path, err)
	}
	if info := readLockInfo(b); err != nil || info == nil || info.Token != l.info.Token {
		return fmt.Errorf("storage: lock %s no longer belongs to this run (%s): %w", l.path, l.info, ErrLockLost)
	}
	return nil
}

// Release stops the heartbeat and removes the lock if it is still ours.
func (l *Lock) Release(ctx context.Context) error {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	if err := l.Check(ctx); err != nil {
		return err
	}
	if !IsGCS(l.path) {
		return wrap("unlock", l.path, os.Remove(l.path))
	}
	obj, err := gcsObject(ctx, l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return wrap("unlock", l.path, obj.If(gcs.Conditions{GenerationMatch: l.gen}).Delete(ctx))
}
