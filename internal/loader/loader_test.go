package loader

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/igpt/igpt/internal/records"
)

func writeShards(t *testing.T, shards, per int) []string {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for s := 0; s < shards; s++ {
		p := filepath.Join(dir, records.ShardName("train", s, shards))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := records.NewWriter(f, records.KindTokens)
		for i := 0; i < per; i++ {
			w.Write(records.Tokens{Key: fmt.Sprintf("s%d-r%d", s, i), Label: i % 3, H: 1, W: 2, Vocab: 100, Tok: []uint16{uint16(s), uint16(i)}})
		}
		w.Flush()
		f.Close()
		files = append(files, p)
	}
	return files
}

func take(t *testing.T, l *Loader, n int) []string {
	var keys []string
	for i := 0; i < n; i++ {
		r, err := l.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.Key)
	}
	return keys
}

func TestEpochsCoverEverythingOnce(t *testing.T) {
	files := writeShards(t, 5, 7)
	l, _ := New(files, Options{Seed: 1, Buffer: 2}, Position{})
	for epoch := 0; epoch < 3; epoch++ {
		seen := map[string]bool{}
		for _, k := range take(t, l, 35) {
			if seen[k] {
				t.Fatalf("epoch %d: %s twice", epoch, k)
			}
			seen[k] = true
		}
		if len(seen) != 35 {
			t.Fatalf("epoch %d covered %d of 35", epoch, len(seen))
		}
	}
	if l.Epoch() != 3 {
		t.Fatalf("epoch %d after 3 epochs", l.Epoch())
	}
}

func TestOrderDependsOnSeedAndEpoch(t *testing.T) {
	files := writeShards(t, 4, 10)
	a, _ := New(files, Options{Seed: 1}, Position{})
	b, _ := New(files, Options{Seed: 2}, Position{})
	ea, eb := fmt.Sprint(take(t, a, 40)), fmt.Sprint(take(t, b, 40))
	if ea == eb {
		t.Fatal("two seeds gave the same order")
	}
	if fmt.Sprint(take(t, a, 40)) == ea {
		t.Fatal("two epochs gave the same order")
	}
}

// TestResume checks that a loader restarted at any saved position yields
// exactly what the uninterrupted one yields.
func TestResume(t *testing.T) {
	files := writeShards(t, 5, 6)
	ref, _ := New(files, Options{Seed: 9, Buffer: 2}, Position{})
	want := take(t, ref, 100)
	for _, cut := range []int{0, 1, 5, 12, 30, 31, 59, 77} {
		l, _ := New(files, Options{Seed: 9, Buffer: 2}, Position{})
		got := take(t, l, cut)
		resumed, _ := New(files, Options{Seed: 9, Buffer: 2}, l.Position())
		got = append(got, take(t, resumed, 100-cut)...)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("resumed at %d (%+v): order differs", cut, l.Position())
		}
	}
}

func TestBatchAndErrors(t *testing.T) {
	files := writeShards(t, 2, 3)
	l, _ := New(files, Options{Seed: 1}, Position{})
	tok, labels := make([]int32, 4*2), make([]int32, 4)
	if err := l.Batch(context.Background(), tok, labels, 4, 2); err != nil {
		t.Fatal(err)
	}
	if err := l.Batch(context.Background(), make([]int32, 3), nil, 1, 3); err == nil {
		t.Fatal("a context of 3 accepted records of 2 tokens")
	}
	if _, err := New(nil, Options{}, Position{}); err == nil {
		t.Fatal("no shards accepted")
	}
	bad, _ := New(files, Options{Seed: 1}, Position{Record: 99})
	if _, err := bad.Next(context.Background()); err == nil {
		t.Fatal("a position past the group accepted")
	}
	all, err := ReadAll(context.Background(), files, 4)
	if err != nil || len(all) != 4 || all[0].Key != "s0-r0" {
		t.Fatalf("ReadAll = %d records, %v", len(all), err)
	}
}

func TestEmptyShards(t *testing.T) {
	l, _ := New(writeShards(t, 3, 0), Options{}, Position{})
	if _, err := l.Next(context.Background()); err == nil {
		t.Fatal("empty shards gave a record")
	}
}
