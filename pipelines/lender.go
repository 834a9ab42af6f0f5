package pipelines

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"runtime"
	"sync"
)

// runNonce names one pipeline's construction: a DoFn keys the models it
// borrows with it too, so that a later pipeline in the same process (a
// --force rerun that rewrote the same checkpoint path) never gets a model
// loaded for an earlier one.
func runNonce() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lender lends a process's DoFns at most one model (and the workspace it
// caches) per core, each loaded once and reused. A DoFn that loads its
// model in Setup holds one per DoFn instance, and the SDK keeps an
// instance for every bundle it ever ran at once: with many bundles in
// flight (prism runs many) the models, not the data, filled the memory
// (vqvae-encode 418 → 636 MiB from 50k to 200k images). Models are keyed
// by what they were loaded from; a new key drops the idle ones.
type lender[M any] struct {
	once  sync.Once
	slots chan struct{} // one per core
	mu    sync.Mutex
	key   string
	free  []M
}

// get returns an idle model of key, or loads one, once fewer than a core's
// worth are lent; put gives it back.
func (l *lender[M]) get(ctx context.Context, key string, load func() (M, error)) (M, error) {
	l.once.Do(func() { l.slots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0))) })
	var zero M
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	l.mu.Lock()
	if l.key != key {
		l.key, l.free = key, nil
	}
	if n := len(l.free); n > 0 {
		m := l.free[n-1]
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return m, nil
	}
	l.mu.Unlock()
	m, err := load()
	if err != nil {
		<-l.slots
		return zero, err
	}
	return m, nil
}

func (l *lender[M]) put(key string, m M) {
	l.mu.Lock()
	if l.key == key {
		l.free = append(l.free, m)
	}
	l.mu.Unlock()
	<-l.slots
}

// workSlots bounds how many elements of one kind a worker process works on
// at once (per core, times perCore): the SDK runs as many bundles at once
// as the runner sends (prism sends one per pending element), and each
// element holds its own buffers, so without a bound a process's memory
// followed the number of shards in flight, not the cores working on them.
type workSlots struct {
	perCore int
	once    sync.Once
	c       chan struct{}
}

func (w *workSlots) acquire(ctx context.Context) error {
	w.once.Do(func() { w.c = make(chan struct{}, max(1, w.perCore*runtime.GOMAXPROCS(0))) })
	select {
	case w.c <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *workSlots) release() { <-w.c }

// shared holds one read-only value per process, loaded once for its key
// and handed to every DoFn instance that asks for the same key (a keys
// table that each instance held a copy of made a worker's memory follow
// the number of bundles in flight). A new key replaces the value; a failed
// load is tried again by the next caller.
type shared[V any] struct {
	mu  sync.Mutex
	key string
	e   *sharedEntry[V]
}

type sharedEntry[V any] struct {
	once sync.Once
	v    V
	err  error
}

func (s *shared[V]) get(key string, load func() (V, error)) (V, error) {
	s.mu.Lock()
	if s.e == nil || s.key != key {
		s.key, s.e = key, &sharedEntry[V]{}
	}
	e := s.e
	s.mu.Unlock()
	e.once.Do(func() { e.v, e.err = load() })
	if e.err != nil {
		s.mu.Lock()
		if s.e == e {
			s.e = nil
		}
		s.mu.Unlock()
	}
	return e.v, e.err
}
