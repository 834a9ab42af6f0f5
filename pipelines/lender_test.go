package pipelines

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestLenderOneModelPerCore: however many DoFn instances ask, a process
// loads at most one model per core, reuses them, and reloads after a key
// change.
func TestLenderOneModelPerCore(t *testing.T) {
	var l lender[*int]
	loads := 0
	load := func() (*int, error) { loads++; v := loads; return &v, nil }
	ctx := context.Background()
	n := max(1, runtime.GOMAXPROCS(0))
	var lent []*int
	for range n {
		m, err := l.get(ctx, "a", load)
		if err != nil {
			t.Fatal(err)
		}
		lent = append(lent, m)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l.get(short, "a", load); err == nil {
		t.Fatalf("a model beyond the %d cores was lent", n)
	}
	for _, m := range lent {
		l.put("a", m)
	}
	for range 10 * n { // many more instances, one after another: no more loads
		m, err := l.get(ctx, "a", load)
		if err != nil {
			t.Fatal(err)
		}
		l.put("a", m)
	}
	if loads != n {
		t.Fatalf("%d loads for %d cores", loads, n)
	}
	m, _ := l.get(ctx, "b", load)
	l.put("b", m)
	if loads != n+1 || len(l.free) != 1 {
		t.Fatalf("after a key change: %d loads, %d idle models", loads, len(l.free))
	}
}

// TestWorkSlots: a process works on at most perCore elements per core of
// one kind at once; the next waits.
func TestWorkSlots(t *testing.T) {
	w := workSlots{perCore: 2}
	n := 2 * max(1, runtime.GOMAXPROCS(0))
	for range n {
		if err := w.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.acquire(ctx); err == nil {
		t.Fatalf("element %d of %d slots started", n+1, n)
	}
	w.release()
	if err := w.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range n {
		w.release()
	}
}

// TestSharedLoadsOncePerKey: however many instances ask at once, a key's
// value is loaded once and the same value handed to all; a new key loads
// again; a failed load is retried by the next caller.
func TestSharedLoadsOncePerKey(t *testing.T) {
	var s shared[*int]
	var mu sync.Mutex
	loads := 0
	load := func() (*int, error) {
		mu.Lock()
		defer mu.Unlock()
		loads++
		v := loads
		return &v, nil
	}
	var wg sync.WaitGroup
	got := make([]*int, 16)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.get("a", load)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		}()
	}
	wg.Wait()
	for i, v := range got {
		if v != got[0] {
			t.Fatalf("instance %d got its own value: each instance holds a copy", i)
		}
	}
	if loads != 1 {
		t.Fatalf("%d loads for one key, want 1", loads)
	}
	if v, _ := s.get("b", load); *v != 2 {
		t.Fatalf("a new key gave value %d, want a fresh load (2)", *v)
	}
	if _, err := s.get("c", func() (*int, error) { return nil, errors.New("boom") }); err == nil {
		t.Fatal("a failed load reported no error")
	}
	if v, err := s.get("c", load); err != nil || *v != 3 {
		t.Fatalf("after a failed load: %v, %v; want a retried load", v, err)
	}
}
