package pipelines

import (
	"context"
	"runtime"
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
